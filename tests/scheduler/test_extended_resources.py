"""Extended resources (``rdma/ib``, hugepages, EFA): filter, ledger, single pods, gangs, state files, ``place``.

Cluster unless a test says otherwise: nodes of 8 GPUs in one rack; ``ib`` nodes offer
``rdma/ib`` (8 each unless given), ``plain`` nodes none.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.cluster import cluster_from_data
from models.errors import SpecError
from models.requests import GangRequest, GangRole, PodRequest
from models.state import StateFile
from models.topology import build_arrays
from scheduler.cli import main
from scheduler.engine import GangConfig, PlacementConfig, place
from scheduler.ledger import Allocation, Ledger, LedgerError, load_state
from scheduler.snapshot import PodShape, Snapshot

IB = "rdma/ib"


def arrays(ib: dict[str, int], plain: int = 0):
    nodes = [{"name": name, "topology": {"gpus": {"count": 8}}, "cpu_milli": 64000, "memory_mib": 512 * 1024,
              "extended_resources": {IB: amount}} for name, amount in ib.items()]
    nodes += [{"name": f"plain-{i}", "topology": {"gpus": {"count": 8}}, "cpu_milli": 64000,
               "memory_mib": 512 * 1024} for i in range(plain)]
    return build_arrays(cluster_from_data({"nodes": nodes}, "test"))


def pod(name: str, gpus: int = 0, ib: int = 0, **extra) -> PodRequest:
    return PodRequest(name=name, gpus=gpus, cpu_milli=1000, extended={IB: ib} if ib else {}, **extra)


def gang(name: str, count: int, gpus: int, ib: int, **extra) -> GangRequest:
    return GangRequest(name=name, roles=(GangRole(name="worker", count=count, gpus=gpus, extended={IB: ib}),), **extra)


SOLVERS = [PlacementConfig(gang=GangConfig(solver="cpsat", time_limit_s=2.0)),
           PlacementConfig(gang=GangConfig(solver="greedy"))]


# --- snapshot and filter -------------------------------------------------------------------------


def test_snapshot_takes_and_gives_back_named_amounts():
    snap = Snapshot.empty(arrays({"ib-0": 8}, plain=1))
    assert snap.free_ext.tolist() == [[8], [0]]
    snap.apply(0, (), 1000, 0, 0, extended=((IB, 3), ("example.com/fpga", 1)))
    assert snap.free_ext.tolist() == [[5], [0]]
    copy = snap.copy()
    snap.apply(0, (), 1000, 0, 0, sign=-1, extended=((IB, 3), ("example.com/fpga", 1)))
    assert snap.free_ext.tolist() == [[8], [0]] and copy.free_ext.tolist() == [[5], [0]]


def test_shape_carries_extended_sorted_and_describes_them():
    shape = PodShape.of(PodRequest(name="p", gpus=8, extended={"vpc.amazonaws.com/efa": 32, IB: 4}))
    assert shape.extended == ((IB, 4), ("vpc.amazonaws.com/efa", 32))
    assert shape.describe() == "8 GPU, 4 rdma/ib, 32 vpc.amazonaws.com/efa"
    assert hash(shape) == hash(PodShape.of(PodRequest(name="q", gpus=8, extended={IB: 4, "vpc.amazonaws.com/efa": 32})))


def test_pod_goes_to_the_only_node_with_the_resource():
    snap = Snapshot.empty(arrays({"ib-0": 8}, plain=3))
    decision = place(snap, [pod("a", 1, ib=4)])
    (p,) = decision.placements
    assert p.node == "ib-0" and p.extended == ((IB, 4),)
    assert p.to_json()["extended"] == {IB: 4}
    assert "extended" not in place(snap, [pod("b", 1)]).placements[0].to_json()


def test_requests_in_one_call_see_each_others_extended_resources():
    decision = place(Snapshot.empty(arrays({"ib-0": 8, "ib-1": 8})), [pod("a", 1, ib=6), pod("b", 1, ib=6),
                                                                        pod("c", 1, ib=6)])
    placed = {o.request: o for o in decision.outcomes}
    assert {placed["a"].placements[0].node, placed["b"].placements[0].node} == {"ib-0", "ib-1"}
    assert not placed["c"].placed
    assert placed["c"].reason == "0/2 nodes are available: 2 Insufficient rdma/ib"


def test_filter_reason_counts_nodes_like_kube_scheduler():
    snap = Snapshot.empty(arrays({"ib-0": 4}, plain=2))
    (o,) = place(snap, [pod("big", 1, ib=8)]).outcomes
    assert not o.placed and o.reason == "0/3 nodes are available: 3 Insufficient rdma/ib"


def test_a_resource_no_node_has_rejects_every_node():
    snap = Snapshot.empty(arrays({}, plain=2))
    req = PodRequest(name="fpga", cpu_milli=1000, extended={"example.com/fpga": 1})
    (o,) = place(snap, [req]).outcomes
    assert not o.placed and o.reason == "0/2 nodes are available: 2 Insufficient example.com/fpga"


def test_replica_set_replicas_take_extended_resources_one_by_one():
    from models.requests import ReplicaSetRequest, Resources

    snap = Snapshot.empty(arrays({"ib-0": 8, "ib-1": 4}))
    rs = ReplicaSetRequest(owner="ml/serve", replicas=3, pod=Resources(gpus=1, extended={IB: 4}))
    (o,) = place(snap, [rs]).outcomes
    assert o.placed and sorted(p.node for p in o.placements) == ["ib-0", "ib-0", "ib-1"]
    rs4 = rs.model_copy(update={"replicas": 4})
    assert not place(snap, [rs4]).outcomes[0].placed


# --- ledger -------------------------------------------------------------------------------------


def test_ledger_refuses_over_commit_unless_forced_and_invariants_see_it():
    ledger = Ledger(arrays({"ib-0": 8}, plain=1))
    ledger.assume(Allocation("a", 0, (0,), 1000, 0, 0, extended=((IB, 6),)))
    with pytest.raises(LedgerError, match="ib-0 has 2 rdma/ib free, needs 4"):
        ledger.assume(Allocation("b", 0, (1,), 1000, 0, 0, extended=((IB, 4),)))
    with pytest.raises(LedgerError, match="plain-0 has 0 rdma/ib free, needs 1"):
        ledger.assume(Allocation("c", 1, (0,), 1000, 0, 0, extended=((IB, 1),)))
    assert "b" not in ledger and "c" not in ledger
    ledger.check_invariants()
    # a pod bound by someone else is counted even when it over-commits
    ledger.observe(Allocation("d", 0, (), 1000, 0, 0, extended=((IB, 4),)), force=True)
    assert int(ledger.live.free_ext[0, 0]) == -2
    with pytest.raises(LedgerError, match="rdma/ib of ib-0 is over-committed"):
        ledger.check_invariants()
    ledger.release("d")
    ledger.release("a")
    assert ledger.live.free_ext.tolist() == [[8], [0]]
    ledger.check_invariants()


def test_invariants_catch_drift_of_free_extended_resources():
    ledger = Ledger(arrays({"ib-0": 8}))
    ledger.assume(Allocation("a", 0, (0,), 1000, 0, 0, extended=((IB, 2),)))
    ledger.live.free_ext[0, 0] += 1
    with pytest.raises(LedgerError, match="free_ext drifted"):
        ledger.check_invariants()


def test_state_file_extended_allocations_and_old_files():
    ledger = Ledger(arrays({"ib-0": 8}))
    state = StateFile.model_validate({"allocations": [
        {"pod": "ml/a", "node": "ib-0", "gpus": [0], "extended": {IB: 6}},
        {"pod": "ml/b", "node": "ib-0", "gpus": [1]},
    ]})
    load_state(ledger, state, "state.yaml")
    assert ledger.get("ml/a").extended == ((IB, 6),) and ledger.get("ml/b").extended == ()
    assert int(ledger.live.free_ext[0, 0]) == 2
    over = StateFile.model_validate({"allocations": [{"pod": "ml/c", "node": "ib-0", "extended": {IB: 3}}]})
    with pytest.raises(SpecError, match=r"state.yaml: allocations\[0\]: does not fit .* 2 rdma/ib free, needs 3"):
        load_state(ledger, over, "state.yaml")


# --- gangs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", SOLVERS, ids=["cpsat", "greedy"])
def test_gang_packs_two_members_per_node_when_rdma_allows(config):
    snap = Snapshot.empty(arrays({"ib-0": 8, "ib-1": 8}, plain=2))
    (o,) = place(snap, [gang("ml/llm", 4, 4, 4)], config).outcomes
    assert o.placed, o.reason
    nodes = [p.node for p in o.placements]
    assert sorted(nodes) == ["ib-0", "ib-0", "ib-1", "ib-1"]
    assert all(p.extended == ((IB, 4),) for p in o.placements)


@pytest.mark.parametrize("config", SOLVERS, ids=["cpsat", "greedy"])
def test_gang_spreads_when_rdma_allows_one_member_per_node(config):
    snap = Snapshot.empty(arrays({f"ib-{i}": 4 for i in range(4)}, plain=2))
    (o,) = place(snap, [gang("ml/llm", 4, 4, 4)], config).outcomes
    assert o.placed, o.reason
    assert sorted(p.node for p in o.placements) == ["ib-0", "ib-1", "ib-2", "ib-3"]


@pytest.mark.parametrize("config", SOLVERS, ids=["cpsat", "greedy"])
def test_gang_fails_whole_when_rdma_runs_out(config):
    snap = Snapshot.empty(arrays({"ib-0": 4, "ib-1": 4}, plain=2))
    (o,) = place(snap, [gang("ml/llm", 4, 4, 4)], config).outcomes
    assert not o.placed and o.placements == []
    assert "2 Insufficient rdma/ib" in o.reason and "fits 2/4" in o.reason, o.reason


@pytest.mark.parametrize("config", SOLVERS, ids=["cpsat", "greedy"])
def test_gang_roles_share_a_node_only_within_its_rdma(config):
    """A launcher that also wants rdma cannot sit beside two workers on a node of 8."""
    roles = (GangRole(name="launcher", count=1, cpu_milli=1000, extended={IB: 2}),
             GangRole(name="worker", count=2, gpus=4, extended={IB: 4}))
    snap = Snapshot.empty(arrays({"ib-0": 8, "ib-1": 2}))
    (o,) = place(snap, [GangRequest(name="ml/job", roles=roles)], config).outcomes
    assert o.placed, o.reason
    by_role = {p.role: p.node for p in o.placements}
    assert [p.node for p in o.placements if p.role == "worker"] == ["ib-0", "ib-0"]
    assert by_role["launcher"] == "ib-1"
    after = snap.copy()
    for p in o.placements:
        after.apply(p.node_index, p.gpus, p.gpu_milli, p.cpu_milli, p.memory_mib, extended=p.extended)
    assert (after.free_ext >= 0).all() and after.free_ext.tolist() == [[0], [0]]


def test_gang_whose_resource_no_node_has_is_refused_with_the_reason():
    snap = Snapshot.empty(arrays({}, plain=2))
    req = GangRequest(name="ml/efa", roles=(GangRole(count=2, gpus=8, extended={"vpc.amazonaws.com/efa": 32}),))
    (o,) = place(snap, [req]).outcomes
    assert not o.placed and "2 Insufficient vpc.amazonaws.com/efa" in o.reason


def test_openb_style_cluster_keeps_its_five_columns():
    from plugins.base import Context
    from scheduler.engine import Engine
    from scheduler.gang_capacity import gang_base

    snap = Snapshot.empty(arrays({}, plain=2))
    req = GangRequest(name="g", roles=(GangRole(count=2, gpus=8),))
    base = gang_base(Engine.from_config(), snap, req, Context(rng=np.random.default_rng(0)), False)
    assert base.free.shape == (2, 5) and base.need.shape == (1, 5) and base.ext_names == ()


# --- toposched place ------------------------------------------------------------------------------


def test_place_cli_reads_extended_requests_and_state_and_prints_them(tmp_path, capsys):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(
        "nodes:\n"
        "  - {name: ib-0, topology: {gpus: {count: 8}}, cpu_milli: 64000, extended_resources: {rdma/ib: 8}}\n"
        "  - {name: ib-1, topology: {gpus: {count: 8}}, cpu_milli: 64000, extended_resources: {rdma/ib: 8}}\n"
        "  - {name: plain, topology: {gpus: {count: 8}}, cpu_milli: 64000}\n")
    state = tmp_path / "state.yaml"
    state.write_text("allocations:\n  - {pod: ml/old, node: ib-0, gpus: [0], extended: {rdma/ib: 6}}\n")
    req = tmp_path / "req.yaml"
    req.write_text("pods:\n  - {name: ml/mpi, gpus: 4, extended: {rdma/ib: 4}}\n")
    args = ["place", "--cluster", str(cluster), "--state", str(state), "--request", str(req)]
    assert main([*args, "--json"]) == 0
    (o,) = json.loads(capsys.readouterr().out)["outcomes"]
    (p,) = o["placements"]
    assert p["node"] == "ib-1" and p["extended"] == {"rdma/ib": 4}
    assert main(args) == 0
    line = capsys.readouterr().out.splitlines()[-1].split()
    assert line[:2] == ["ml/mpi", "ib-1"] and line[-2:] == ["rdma/ib", "4"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("pods:\n  - {name: ml/x, extended: {rdma/ib: 0.5}}\n")
    assert main(["place", "--cluster", str(cluster), "--request", str(bad)]) == 2
    assert "pods[0].extended.rdma/ib" in capsys.readouterr().err
