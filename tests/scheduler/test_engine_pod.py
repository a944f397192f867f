"""Single-pod placement through place(): exact nodes, GPU indices and reasons.

The cluster used below (2 racks x 2 nodes; n1 has 4 GPUs as 2 NVLink pairs, the others
4 GPUs on NVSwitch; n4 is tainted)::

          rack r1                    rack r2
     ┌──────────────┐          ┌──────────────┐
     n1 [0=1] [2=3]  n2 [0-3]  n3 [0-3]      n4 [0-3] (taint gpu=reserved:NoSchedule)
"""

from __future__ import annotations

import numpy as np
import pytest

from models.cluster import cluster_from_data
from models.requests import PodRequest, ReplicaSetRequest, Resources, Toleration
from models.topology import build_arrays
from scheduler.engine import PlacementConfig, place
from scheduler.ledger import Allocation, Ledger

PAIRS = {"gpus": {"count": 4, "model": "A100"}, "nvlinks": [{"gpus": [0, 1], "links": 4}, {"gpus": [2, 3], "links": 4}],
         "numa": [0, 0, 1, 1]}
SWITCH = {"gpus": {"count": 4, "model": "H100"}, "nvswitch": {"links_per_gpu": 18}}


def tiny_cluster():
    spec = {
        "levels": [{"name": "rack"}],
        "nodes": [
            {"name": "n1", "topology": PAIRS, "cpu_milli": 32000, "memory_mib": 262144, "levels": {"rack": "r1"}},
            {"name": "n2", "topology": SWITCH, "cpu_milli": 32000, "memory_mib": 262144, "levels": {"rack": "r1"}},
            {"name": "n3", "topology": SWITCH, "cpu_milli": 32000, "memory_mib": 262144, "levels": {"rack": "r2"}},
            {"name": "n4", "topology": SWITCH, "cpu_milli": 32000, "memory_mib": 262144, "levels": {"rack": "r2"},
             "state": {"taints": [{"key": "gpu", "value": "reserved", "effect": "NoSchedule"}]}},
        ],
    }
    return build_arrays(cluster_from_data(spec, "tiny"))


@pytest.fixture
def ledger():
    return Ledger(tiny_cluster())


def pod(name="p", **kw):
    return PodRequest(name=name, **kw)


def test_two_gpu_pod_takes_an_nvlink_pair_on_the_fullest_node(ledger):
    ledger.observe(Allocation("busy", 1, (0, 1, 2), 1000, 0, 0))  # n2 has 1 GPU left
    ledger.observe(Allocation("busy2", 0, (0,), 1000, 0, 0))  # n1: GPU 0 used, pair 2=3 free
    d = place(ledger.snapshot(), [pod(gpus=2)], PlacementConfig(profile="binpack"))
    (p,) = d.placements
    assert (p.node, p.gpus) == ("n1", (2, 3))


def test_reasons_add_up_the_kube_scheduler_way(ledger):
    ledger.observe(Allocation("a", 0, (0, 1, 2), 1000, 0, 0))
    ledger.observe(Allocation("b", 1, (0, 1, 2), 1000, 0, 0))
    d = place(ledger.snapshot(), [pod(gpus=2, cpu_milli=40000)], PlacementConfig())
    (u,) = d.unplaced
    assert u.reason == ("0/4 nodes are available: 2 had fewer than 2 free GPUs, 1 Insufficient cpu, "
                        "1 node(s) had untolerated taint {gpu: reserved}")


def test_toleration_opens_the_tainted_node(ledger):
    for i, n in enumerate((0, 1, 2)):
        ledger.observe(Allocation(f"x{i}", n, (0, 1, 2, 3), 1000, 0, 0))
    tol = Toleration(key="gpu", operator="Equal", value="reserved", effect="NoSchedule")
    d = place(ledger.snapshot(), [pod(gpus=4, tolerations=(tol,))], PlacementConfig())
    assert [(p.node, p.gpus) for p in d.placements] == [("n4", (0, 1, 2, 3))]


def test_node_selector_and_model(ledger):
    d = place(ledger.snapshot(), [pod(gpus=1, gpu_models=("a100",))], PlacementConfig())
    assert d.placements[0].node == "n1"
    d = place(ledger.snapshot(), [pod(gpus=1, node_selector={"topology.toposched.io/rack": "r2"})], PlacementConfig())
    assert d.placements[0].node == "n3"
    d = place(ledger.snapshot(), [pod(gpus=1, gpu_models=("B200",))], PlacementConfig())
    assert d.unplaced[0].reason == ("0/4 nodes are available: 3 had no GPU of model B200, "
                                    "1 node(s) had untolerated taint {gpu: reserved}")


def test_shared_gpu_pods_share_one_gpu(ledger):
    reqs = [pod(f"s{i}", gpus=1, gpu_milli=300) for i in range(3)]
    d = place(ledger.snapshot(), reqs, PlacementConfig(profile="binpack"))
    assert len({(p.node, p.gpus) for p in d.placements}) == 1
    snap = ledger.snapshot()
    for p in d.placements:
        snap.apply(p.node_index, p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib)
    assert snap.gpu_free[d.placements[0].node_index, d.placements[0].gpus[0]] == 100


def test_requests_in_one_call_see_each_other(ledger):
    d = place(ledger.snapshot(), [pod(f"p{i}", gpus=4) for i in range(4)], PlacementConfig())
    assert sorted(p.node for p in d.placements) == ["n1", "n2", "n3"]
    assert d.unplaced[0].request == "p3"


def test_cordoned_and_failed_nodes_are_skipped_with_reasons():
    arrays = tiny_cluster()
    ledger = Ledger(arrays)
    ledger.set_failed(0, True)
    d = place(ledger.snapshot(), [pod(gpus=4, cpu_milli=64000)], PlacementConfig())
    assert d.unplaced[0].reason.startswith("0/4 nodes are available: 2 Insufficient cpu, 1 node(s) had failed")


def test_replica_set_spreads_over_racks(ledger):
    rs = ReplicaSetRequest(owner="ml/chat", replicas=2, pod=Resources(gpus=1), spread_level="rack")
    d = place(ledger.snapshot(), [rs], PlacementConfig())
    racks = {ledger.arrays.node_domain(p.node_index, 0) for p in d.placements}
    assert racks == {"r1", "r2"}


def test_decision_is_deterministic(ledger):
    reqs = [pod(f"p{i}", gpus=1 + i % 3, cpu_milli=1000) for i in range(8)]
    a = place(ledger.snapshot(), reqs, PlacementConfig(tie_break="random", seed=7))
    b = place(ledger.snapshot(), reqs, PlacementConfig(tie_break="random", seed=7))
    assert [p.to_json() for p in a.placements] == [p.to_json() for p in b.placements]


def test_snapshot_given_to_place_is_not_mutated(ledger):
    snap = ledger.snapshot()
    before = snap.gpu_free.copy()
    place(snap, [pod(gpus=2)], PlacementConfig())
    assert np.array_equal(before, snap.gpu_free)


def test_gpu_sets_kept_per_node_follow_changes_of_the_snapshot():
    from scheduler.engine import build_candidates
    from scheduler.snapshot import PodShape, Snapshot

    snap = Snapshot.empty(tiny_cluster())
    shape = PodShape(cpu_milli=1000, gpus=2, gpu_milli=1000)
    ok = np.ones(snap.n_nodes, dtype=bool)

    def sets(s):
        c = build_candidates(s, shape, ok)
        return {int(n): tuple(g) for n, g in zip(c.node, c.gpus, strict=True)}

    assert sets(snap) == {0: (0, 1), 1: (0, 1), 2: (0, 1), 3: (0, 1)}
    snap.apply(0, (0,), 1000, 1000, 0)  # n1 keeps only its pair 2=3
    snap.apply(1, (0, 1, 2), 1000, 1000, 0)  # n2 has one GPU left: no pair
    assert sets(snap) == {0: (2, 3), 2: (0, 1), 3: (0, 1)} == sets(snap.copy())
    assert snap.node_cache[("gpu-sets", 2)][0].tolist() == snap.node_gen.tolist() == [1, 2, 0, 0]
    snap.apply(1, (0, 1, 2), 1000, 1000, 0, sign=-1)
    assert sets(snap) == {0: (2, 3), 1: (0, 1), 2: (0, 1), 3: (0, 1)}
