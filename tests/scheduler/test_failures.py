"""Node failures: the pure detector, lost pods, and the loop repairing gangs on the in-memory cluster.

Loop cases (bindings inline, injected clock, 30 s grace)::

    rack r0: n0 n1 n2      rack r1: n3 n4 n5      (8 GPUs each)

A test plays the job controller: a pod toposched deletes comes back under a new name
with the same labels and annotations (``recreate``).
"""

from __future__ import annotations

from collections import Counter

import pytest

from models.placement import Placement
from models.requests import GangRequest, GangRole
from models.spec import LevelSpec
from models.topology import build_arrays
from scheduler.failures import (
    BoundRef,
    FailureDetector,
    NodeFailed,
    NodeFailureConfig,
    NodeRecovered,
    failing_taint,
    lost_pods,
    ready_status,
)
from scheduler.fakes import InMemoryCluster, RecordingEvents
from scheduler.loop import Scheduler
from scheduler.partial_gang import slice_groups
from scheduler.serve_config import BackoffConfig, ServeConfig
from tests.builders import build, make_cluster, make_node
from tests.clock import ManualClock
from tests.integration import objects as o

# --------------------------------------------------------------------------- the detector


def node(name: str = "n0", ready: str | None = "True", taints: list | None = None, cordoned: bool = False) -> dict:
    conds = [] if ready is None else [{"type": "Ready", "status": ready}]
    return {"metadata": {"name": name}, "spec": {"taints": taints or [], "unschedulable": cordoned},
            "status": {"conditions": conds}}


def test_ready_status_reads_the_condition():
    assert ready_status(node(ready="True")) == "True"
    assert ready_status(node(ready="False")) == "False"
    assert ready_status(node(ready="Unknown")) == "Unknown"
    assert ready_status(node(ready=None)) == "Unknown"


@pytest.mark.parametrize("taint, failed", [
    ({"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}, "node.kubernetes.io/unreachable:NoExecute"),
    ({"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}, "node.kubernetes.io/not-ready:NoExecute"),
    ({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}, None),
    ({"key": "example.com/gpu-broken", "effect": "NoSchedule"}, "example.com/gpu-broken:NoSchedule"),
    ({"key": "example.com/gpu-broken", "effect": "PreferNoSchedule"}, None),
    ({"key": "example.com/other", "effect": "NoExecute"}, None),
], ids=["unreachable", "not-ready", "not-ready-noschedule", "operator", "operator-prefer", "unlisted"])
def test_failing_taints(taint, failed):
    keys = NodeFailureConfig().taint_keys
    assert failing_taint(node(taints=[taint]), keys, ["example.com/gpu-broken"]) == failed


def test_not_ready_counts_after_the_grace_period():
    d = FailureDetector(NodeFailureConfig(grace_s=30))
    assert d.observe({"n0": node(), "n1": node("n1")}, now=0.0) == []
    assert d.observe({"n0": node(ready="Unknown"), "n1": node("n1")}, now=10.0) == []
    assert d.next_deadline() == 40.0
    assert d.observe({"n0": node(ready="Unknown"), "n1": node("n1")}, now=39.0) == []
    assert d.observe({"n0": node(ready="Unknown"), "n1": node("n1")}, now=40.0) == [
        NodeFailed("n0", "Ready=Unknown for 30s", 40.0)]
    assert d.observe({"n0": node(ready="Unknown"), "n1": node("n1")}, now=50.0) == []  # once
    assert d.observe({"n0": node(), "n1": node("n1")}, now=60.0) == [NodeRecovered("n0", 60.0)]


def test_a_blip_shorter_than_the_grace_is_not_a_failure():
    d = FailureDetector(NodeFailureConfig(grace_s=30))
    d.observe({"n0": node(ready="False")}, now=0.0)
    d.observe({"n0": node()}, now=20.0)
    assert d.observe({"n0": node(ready="False")}, now=40.0) == []  # the clock starts again
    assert d.observe({"n0": node(ready="False")}, now=70.0) == [NodeFailed("n0", "Ready=False for 30s", 70.0)]


def test_taint_fails_at_once_cordon_never_deletion_does():
    d = FailureDetector(NodeFailureConfig(grace_s=30))
    d.observe({"n0": node(), "n1": node("n1"), "n2": node("n2")}, now=0.0)
    got = d.observe({"n0": node(taints=[{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]),
                     "n1": node("n1", cordoned=True)}, now=1.0)
    assert got == [NodeFailed("n0", "tainted node.kubernetes.io/unreachable:NoExecute", 1.0),
                   NodeFailed("n2", "deleted", 1.0)]
    assert sorted(d.failed) == ["n0", "n2"]
    assert d.observe({"n0": node(), "n1": node("n1"), "n2": node("n2")}, now=2.0) == [
        NodeRecovered("n0", 2.0), NodeRecovered("n2", 2.0)]


def test_lost_pods_per_gang_owner_and_single():
    pods = [BoundRef("ns/a", "n0", gang="ns/g"), BoundRef("ns/b", "n1", gang="ns/g"), BoundRef("ns/c", "n0", owner="ns/rs"),
            BoundRef("ns/d", "n0"), BoundRef("ns/e", "n2", gang="ns/h")]
    lost = lost_pods({"n0", "n1"}, pods)
    assert lost.by_gang == {"ns/g": ["ns/a", "ns/b"]}
    assert lost.by_owner == {"ns/rs": ["ns/c"]}
    assert lost.single == ["ns/d"]
    assert lost.keys == ["ns/a", "ns/b", "ns/c", "ns/d"]


# --------------------------------------------------------------------------- the loop


class Rig:
    """A scheduler on an in-memory cluster of two racks of three 8-GPU nodes (or ``per_rack``)."""

    def __init__(self, per_rack: int = 3, **failures) -> None:
        self.clock = ManualClock()
        self.cluster = InMemoryCluster()
        self.events = RecordingEvents()
        cfg = ServeConfig(levels=[LevelSpec(name="rack", label=o.RACK_LABEL)],
                          backoff=BackoffConfig(initial_s=1, max_s=10, unschedulable_retry_s=60),
                          node_failures=NodeFailureConfig(**failures))
        self.s = Scheduler(cfg, self.cluster, self.events, clock=self.clock, bind_workers=0,
                           background_reporting=False)
        for i in range(2 * per_rack):
            self.cluster.add_node(o.node(f"n{i}", 8, rack=f"r{i // per_rack}"))
        self.cluster.connect(self.s)
        self.recreated = 0

    def run(self, steps: int = 20) -> None:
        for _ in range(steps):
            stats = self.s.step()
            if not stats.events and not stats.decided:
                return

    def later(self, seconds: float) -> None:
        self.clock.now += seconds
        self.run()

    def set_ready(self, name: str, status: str) -> None:
        """Patch the node's Ready condition; the scheduler sees it now (the grace starts here)."""
        n = self.cluster.nodes[name]
        self.cluster.add_node({**n, "status": {**n["status"], "conditions": [{"type": "Ready", "status": status}]}})
        self.run()

    def recreate(self, gone: dict[str, dict]) -> list[str]:
        """The controller: pods deleted since ``gone`` was taken come back under new names."""
        out = []
        for key, pod in gone.items():
            if key not in self.cluster.pods:
                self.recreated += 1
                meta = {k: v for k, v in pod["metadata"].items() if k not in ("uid", "resourceVersion")}
                meta["name"] = f"{meta['name']}-r{self.recreated}"
                spec = {k: v for k, v in pod["spec"].items() if k != "nodeName"}
                self.cluster.add_pod({**pod, "metadata": meta, "spec": spec, "status": {"phase": "Pending"}})
                out.append(f"default/{meta['name']}")
        return out

    def notes(self, key: str, reason: str) -> list[str]:
        return [e.note for e in self.events.for_object(key, reason)]

    def rack(self, node: str) -> str:
        return self.cluster.nodes[node]["metadata"]["labels"][o.RACK_LABEL]


def start_gang(rig: Rig, name: str = "g", count: int = 2, **ann) -> dict[str, str]:
    """Bind an 8-GPU-per-member gang; on an empty cluster it takes the first nodes of rack r0."""
    for p in o.our_gang(name, count, 8, **ann):
        rig.cluster.add_pod(p)
    rig.run()
    bound = {k: v for k, v in rig.cluster.bound().items() if k.startswith(f"default/{name}-")}
    assert len(bound) == count
    return bound


def test_node_not_ready_past_grace_loses_its_pod_and_the_gang_is_repaired_in_its_rack():
    rig = Rig()
    bound = start_gang(rig, required_level="rack")
    victim, survivor = "default/g-1", "default/g-0"
    dead = bound[victim]
    snapshot = dict(rig.cluster.pods)
    rig.set_ready(dead, "Unknown")
    rig.later(10)
    assert victim in rig.cluster.pods  # inside the grace period nothing happens
    rig.later(25)
    assert victim not in rig.cluster.pods
    assert rig.notes(victim, "NodeFailed") == [
        f"node {dead} failed (Ready=Unknown for 35s); deleted by toposched so that its controller recreates it; "
        "gang default/g is repaired next to its surviving members"]
    assert rig.notes(dead, "NodeFailed")
    assert rig.s.cache.ledger.live.failed[rig.s.cache.arrays.node_index[dead]]
    (new,) = rig.recreate(snapshot)
    rig.run()
    now = rig.cluster.bound()
    assert now[survivor] == bound[survivor]  # the survivor stays
    assert now[new] not in (dead, bound[survivor]) and rig.rack(now[new]) == rig.rack(bound[survivor])
    (note,) = rig.notes(new, "GangRepaired")
    assert note.startswith(f"replaces a member of gang default/g lost on failed node(s) {dead}: kept 1 survivors, "
                           f"replaced 1 within rack {rig.rack(now[new])}")
    assert rig.s.failures.repaired == 1
    rig.s.cache.ledger.check_invariants()


def test_gang_that_cannot_be_repaired_restarts_whole_with_events():
    """Racks of two: rack r0 has no third node, so the survivor is deleted and the whole gang moves to r1."""
    rig = Rig(per_rack=2)
    bound = start_gang(rig, required_level="rack")
    dead = bound["default/g-1"]
    snapshot = dict(rig.cluster.pods)
    rig.set_ready(dead, "False")
    rig.later(31)
    (new,) = rig.recreate(snapshot)
    rig.run()
    assert "default/g-0" not in rig.cluster.pods
    why = ("repair gang default/g: member default/g/worker-0 (8 GPU, 1000m CPU, 1024 MiB): 2/4 nodes are available: "
           "1 had fewer than 8 free GPUs, 1 node(s) had failed; 2 feasible node(s) outside required rack r0")
    assert rig.notes("default/g-0", "GangRestart") == [
        f"Deleted by toposched: gang default/g lost members on failed node(s) {dead} and cannot be repaired next "
        f"to its survivors ({why}); the whole gang is placed anew"]
    assert rig.notes(new, "GangRestart") == [
        f"gang default/g cannot be repaired ({why}); its surviving members are deleted and the whole gang is "
        "placed anew"]
    assert rig.s.failures.restarted == 1
    again = rig.recreate({"default/g-0": snapshot["default/g-0"]})
    rig.later(11)
    now = rig.cluster.bound()
    nodes = [now[k] for k in (new, *again)]
    assert len(set(nodes)) == 2 and dead not in nodes and len({rig.rack(n) for n in nodes}) == 1


def test_a_restarted_gangs_member_whose_deletion_is_refused_is_deleted_again_until_it_is_gone():
    rig = Rig(per_rack=2)
    bound = start_gang(rig, required_level="rack")
    dead = bound["default/g-1"]
    snapshot = dict(rig.cluster.pods)
    rig.cluster.fail("default/g-0", 403, times=3, operation="delete")
    rig.set_ready(dead, "False")
    rig.later(31)
    (new,) = rig.recreate(snapshot)
    rig.run()
    assert rig.notes("default/g-0", "GangRestart")
    (note,) = rig.notes("default/g-0", "DeleteFailed")
    assert note.startswith("toposched could not delete this pod (gang default/g restarts): ")
    for wait in (2, 4):  # refused twice more
        rig.later(wait)
        assert "default/g-0" in rig.cluster.pods
        assert new not in rig.cluster.bound()
    rig.later(8)
    assert "default/g-0" not in rig.cluster.pods
    again = rig.recreate({"default/g-0": snapshot["default/g-0"]})
    rig.later(11)
    now = rig.cluster.bound()
    assert len({rig.rack(now[k]) for k in (new, *again)}) == 1 and dead not in now.values()
    rig.s.cache.ledger.check_invariants()


def test_a_replica_that_no_longer_leads_deletes_nothing_and_leaves_the_pod_to_the_leader():
    """A gang rolled back after the lease was lost, or a deletion refused with NotLeader: the pod
    is not deleted, nor kept as being deleted (the leader sees a partly bound gang and decides)."""
    from scheduler.ports import KubeApiError

    rig = Rig(per_rack=2)
    start_gang(rig)
    leading = [False]
    rig.s.is_leader = lambda: leading[0]
    assert not rig.s.failures.delete(rig.s, "default/g-0", "a test")
    assert "default/g-0" in rig.cluster.pods and not rig.s.failures.being_deleted(rig.s.cache, "default/g-0")
    leading[0] = True
    rig.cluster.fail("default/g-1", 403, times=1, operation="delete")
    assert rig.s.failures.delete(rig.s, "default/g-1", "a test")  # refused (403): a retry is due in 2 s
    rig.s.failures.deletion_failed(rig.s, "default/g-1", KubeApiError(0, "NotLeader", "lost the lease"))
    assert not rig.s.failures.being_deleted(rig.s.cache, "default/g-1")
    rig.later(120)
    assert {"default/g-0", "default/g-1"} <= set(rig.cluster.pods)  # nothing tried again

def test_many_nodes_fail_at_once_every_gang_is_repaired():
    rig = Rig(per_rack=4)
    a = start_gang(rig, "a", 2)
    b = {k: v for k, v in rig.cluster.bound().items() if k.startswith("default/a-")}
    for p in o.our_gang("b", 2, 8):
        rig.cluster.add_pod(p)
    rig.run()
    b = {k: v for k, v in rig.cluster.bound().items() if k.startswith("default/b-")}
    snapshot = dict(rig.cluster.pods)
    for dead in (a["default/a-0"], b["default/b-1"]):
        rig.set_ready(dead, "Unknown")
    rig.later(31)
    new = rig.recreate(snapshot)
    assert len(new) == 2
    rig.run()
    now = rig.cluster.bound()
    assert all(k in now for k in new)
    assert now["default/a-1"] == a["default/a-1"] and now["default/b-0"] == b["default/b-0"]
    assert rig.s.failures.repaired == 2


def test_replica_on_a_failed_node_is_deleted_and_its_replacement_placed_elsewhere():
    rig = Rig()
    rs = [o.pod(f"web-{i}", 2, owner=("ReplicaSet", "web")) for i in range(2)]
    for p in rs:
        rig.cluster.add_pod(p)
    rig.run()
    bound = rig.cluster.bound()
    assert bound["default/web-0"] != bound["default/web-1"]  # replicas spread
    dead = bound["default/web-0"]
    snapshot = dict(rig.cluster.pods)
    rig.cluster.add_node({**rig.cluster.nodes[dead], "spec": {"taints": [
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}})
    rig.run()
    assert "default/web-0" not in rig.cluster.pods
    (new,) = rig.recreate(snapshot)
    rig.run()
    now = rig.cluster.bound()
    assert now[new] not in (dead, now["default/web-1"])


def test_recovered_node_returns_to_the_pool_and_nothing_moves_back():
    rig = Rig()
    bound = start_gang(rig)
    dead = bound["default/g-1"]
    snapshot = dict(rig.cluster.pods)
    rig.set_ready(dead, "False")
    rig.later(31)
    (new,) = rig.recreate(snapshot)
    rig.run()
    placed = rig.cluster.bound()[new]
    rig.set_ready(dead, "True")
    rig.run()
    idx = rig.s.cache.arrays.node_index[dead]
    assert not rig.s.cache.ledger.live.failed[idx]
    assert rig.notes(dead, "NodeRecovered") == [f"node {dead} is healthy again and returns to the pool; "
                                                 "nothing is moved back"]
    assert rig.cluster.bound()[new] == placed


def test_cordoned_node_keeps_its_pods_but_takes_no_new_ones():
    rig = Rig()
    rig.cluster.add_pod(o.pod("a", 8))
    rig.run()
    where = rig.cluster.bound()["default/a"]
    rig.cluster.add_node({**rig.cluster.nodes[where], "spec": {"unschedulable": True}})
    rig.later(60)
    assert rig.cluster.bound()["default/a"] == where and not rig.s.failures.failed
    for i in range(5):
        rig.cluster.add_pod(o.pod(f"b{i}", 8))
    rig.run()
    assert where not in [n for k, n in rig.cluster.bound().items() if k != "default/a"]


def test_deleted_node_loses_its_pods():
    rig = Rig()
    rig.cluster.add_pod(o.pod("a", 4))
    rig.run()
    where = rig.cluster.bound()["default/a"]
    rig.cluster.remove_node(where)
    rig.run()
    assert "default/a" not in rig.cluster.pods
    assert rig.notes("default/a", "NodeFailed")[0].startswith(f"node {where} failed (deleted)")


def test_disabled_detection_leaves_pods_alone():
    rig = Rig(enabled=False)
    rig.cluster.add_pod(o.pod("a", 4))
    rig.run()
    where = rig.cluster.bound()["default/a"]
    rig.set_ready(where, "False")
    rig.later(120)
    assert rig.cluster.bound()["default/a"] == where


def test_a_lost_slice_member_is_replaced_in_its_slice_domain_not_next_to_most_survivors():
    """Two slices of two (rack level): slice 0 on n0 n1, slice 1 on n3 n4. n1 dies; n5 would sit
    next to two survivors, but the replacement belongs to slice 0 and goes to n2 in rack r0."""
    rig = Rig()
    bound = start_gang(rig, count=4, slice_size="2", slice_level="rack")
    racks = {}
    for key, n in bound.items():
        racks.setdefault(rig.rack(n), []).append(key)
    assert sorted(len(v) for v in racks.values()) == [2, 2]  # one slice per rack
    victim = racks["r0"][0]
    dead = bound[victim]
    snapshot = dict(rig.cluster.pods)
    rig.set_ready(dead, "False")
    rig.later(31)
    (new,) = rig.recreate(snapshot)
    rig.run()
    now = rig.cluster.bound()
    assert rig.rack(now[new]) == "r0" and now[new] != dead
    assert all(now[k] == bound[k] for k in bound if k != victim)
    (note,) = rig.notes(new, "GangRepaired")
    assert "kept 3 survivors, replaced 1" in note
    assert rig.s.failures.repaired == 1


def test_a_whole_lost_slice_moves_together():
    """Slices of two at host level (two 4-GPU members per node): n0 dies with all of slice 0; its two
    replacements land together on one node, and slice 1 stays."""
    rig = Rig()
    pods = o.our_gang("h", 4, 4, slice_size="2", slice_level="host")
    for p in pods:
        rig.cluster.add_pod(p)
    rig.run()
    bound = {k: v for k, v in rig.cluster.bound().items() if k.startswith("default/h-")}
    assert len(set(bound.values())) == 2
    dead = bound["default/h-0"]
    lost = [k for k, n in bound.items() if n == dead]
    snapshot = dict(rig.cluster.pods)
    rig.set_ready(dead, "False")
    rig.later(31)
    new = rig.recreate(snapshot)
    assert len(new) == len(lost) == 2
    rig.run()
    now = rig.cluster.bound()
    assert now[new[0]] == now[new[1]] != dead
    assert rig.s.failures.repaired == 1


# Slices told by place: four 8-GPU nodes, racks r0 (n0 n1) and r1 (n2 n3); a gang of eight
# one-GPU members in slices of two per rack. A node named "gone" is one deleted from the cluster.
ARRAYS = build_arrays(build(make_cluster(*(make_node(f"n{i}", 8, rack=f"r{i // 2}") for i in range(4)),
                                         levels=["rack"])))
SLICED = GangRequest(name="g", roles=(GangRole(name="w", count=8, gpus=1),), slice_size=2, slice_level="rack")


def at(pod: str, node: str) -> Placement:
    return Placement(pod, node, ARRAYS.node_index.get(node, -1), (0,), 1000, 0, 0)


def test_slice_groups_join_a_partial_slice_first_then_move_whole_slices_together():
    """Slices of two at rack level (survivors named after the replacements, as ``with_survivors`` does).
    r0 had {w-6, w-0} and {w-1, w-2}, all but w-6 lost there, so the first replacement completes
    w-6's slice and the other two are one whole slice, free to move. r1 had {w-7, w-3}: w-3 was lost
    on a node since deleted (no domain), so it completes w-7's slice; w-4 and w-5, lost there too,
    are one slice that moves."""
    full, kept = SLICED, [at("g/w-6", "n0"), at("g/w-7", "n2")]
    old = [(p.pod, p.node_index) for p in (at("g/w-0", "n1"), at("g/w-1", "n1"), at("g/w-2", "n1"), at("g/w-3", "gone"),
                                           at("g/w-4", "gone"), at("g/w-5", "gone"))]
    groups = slice_groups(full, kept, old, ARRAYS)
    r0, r1 = int(ARRAYS.domain[0][0]), int(ARRAYS.domain[0][2])
    assert groups == {"g/w-6": ("in", r0), "g/w-7": ("in", r1), "g/w-0": ("in", r0), "g/w-1": ("moved", r0, 0),
                      "g/w-2": ("moved", r0, 0), "g/w-3": ("in", r1), "g/w-4": ("moved", "gone", 0),
                      "g/w-5": ("moved", "gone", 0)}
    assert slice_groups(full.model_copy(update={"slice_size": None, "slice_level": None}), kept, old, ARRAYS) is None


def test_slice_groups_cut_what_is_left_over_into_slices_together():
    """Slices of two at rack level. r0 had {w-6, w-2} and {w-0, w-1}: w-2 was on a node since deleted,
    w-0 and w-1 on failed n1. w-0 completes w-6's slice; w-1 and w-2 are one slice now, so they go
    together (they were two "slices" of one member each, free to split up). r1 had {w-7, w-3}, w-3
    lost; w-4 and w-5 (an elastic gang's members never placed) are one slice too (they had none)."""
    full, kept = SLICED, [at("g/w-6", "n0"), at("g/w-7", "n2")]
    old = [(p.pod, p.node_index) for p in (at("g/w-0", "n1"), at("g/w-1", "n1"), at("g/w-2", "gone"), at("g/w-3", "n3"))]
    groups = slice_groups(full, kept, old, ARRAYS)
    r0, r1 = int(ARRAYS.domain[0][0]), int(ARRAYS.domain[0][2])
    assert groups["g/w-0"] == groups["g/w-6"] == ("in", r0)
    assert groups["g/w-3"] == groups["g/w-7"] == ("in", r1)
    assert groups["g/w-1"] == groups["g/w-2"] != groups["g/w-4"] == groups["g/w-5"]
    assert Counter(groups.values())[groups["g/w-1"]] == 2 and Counter(groups.values())[groups["g/w-4"]] == 2


# --------------------------------------------------------------------------- partly bound gangs


def bind_directly(rig: Rig, pod: dict, node: str) -> None:
    """A member bound before this scheduler saw it (a leader that stopped in the middle of the gang)."""
    rig.cluster.add_pod({**pod, "spec": {**pod["spec"], "nodeName": node}, "status": {"phase": "Running"}})


def busy(rig: Rig, name: str, node: str, gpus: int) -> None:
    bind_directly(rig, o.pod(name, gpus), node)


def partly_bound(rig: Rig, size: int, on: tuple[str, ...], gpus: int = 8, **ann: str) -> list[dict]:
    """Gang ``g`` of ``size`` members: the first ones bound directly on the nodes ``on``, the rest
    pending; the loop then runs."""
    pods = o.our_gang("g", size, gpus, **ann)
    for pod, node in zip(pods, on, strict=False):
        bind_directly(rig, pod, node)
    for pod in pods[len(on):]:
        rig.cluster.add_pod(pod)
    rig.run()
    return pods


def test_a_partly_bound_gang_is_completed_in_its_bound_members_rack():
    """g-0 was bound to n4 (rack r1) by a leader that then stopped. Rack r0 is the tighter fit for
    one 8-GPU pod (12 free GPUs against 16), but the gang must stay in one rack: g-1 goes to r1."""
    rig = Rig()
    busy(rig, "busy-0", "n0", 4)
    busy(rig, "busy-1", "n1", 8)
    partly_bound(rig, 2, ("n4",), required_level="rack")
    now = rig.cluster.bound()
    assert now["default/g-0"] == "n4" and rig.rack(now["default/g-1"]) == "r1"
    assert rig.s.failures.completed == 1
    rig.s.cache.ledger.check_invariants()


def test_a_partly_bound_gang_short_of_its_minimum_restarts_when_the_rest_does_not_fit_next_to_it():
    """g-0 is bound in rack r1, whose other nodes are full: the gang cannot be completed there,
    so g-0 is deleted (no gang stays partly bound) and the gang is placed anew."""
    rig = Rig()
    busy(rig, "busy-3", "n3", 8)
    busy(rig, "busy-5", "n5", 8)
    pods = partly_bound(rig, 2, ("n4",), required_level="rack")
    assert "default/g-0" not in rig.cluster.pods
    (note,) = rig.notes("default/g-0", "GangRestart")
    assert note.startswith("Deleted by toposched: gang default/g has 1 bound members, short of its minimum 2, and "
                           "the rest do not fit next to them (")
    assert rig.s.failures.restarted == 1
    (new,) = rig.recreate({"default/g-0": pods[0]})
    rig.later(11)
    now = rig.cluster.bound()
    assert {rig.rack(now[k]) for k in (new, "default/g-1")} == {"r0"}


def test_an_elastic_gangs_later_pods_wait_for_room_next_to_its_running_members():
    """An elastic gang (min 2 of 3) runs with two members in rack r1; its third pod does not fit in
    r1 and waits, while the running members stay (they already make the minimum)."""
    rig = Rig()
    busy(rig, "busy-5", "n5", 8)
    partly_bound(rig, 3, ("n3", "n4"), required_level="rack", gang_min_members="2")
    assert "default/g-2" not in rig.cluster.bound()
    assert rig.cluster.bound()["default/g-0"] == "n3" and rig.cluster.bound()["default/g-1"] == "n4"
    (note,) = {e.note for e in rig.events.for_object("default/g-2", "FailedScheduling")}
    assert note.startswith("gang default/g: 2 members are bound; the rest do not fit next to them (")
    assert not rig.events.for_object("default/g-0", "GangRestart") and rig.s.failures.restarted == 0


def test_an_elastic_gangs_later_pod_preempts_next_to_its_running_members_not_where_room_is_free():
    """The gang (min 2 of 3, one rack, priority 100) runs on n3 and n4; n5, the last node of rack r1,
    holds a pod of priority 1, and rack r0 is empty. The third pod cannot go to r0 (not next to
    the running members): it preempts the pod on n5 and is bound there."""
    rig = Rig()
    bind_directly(rig, o.pod("low", 8, priority=1), "n5")
    pods = [{**p, "spec": {**p["spec"], "priority": 100}}
            for p in o.our_gang("g", 3, 8, required_level="rack", gang_min_members="2")]
    bind_directly(rig, pods[0], "n3")
    bind_directly(rig, pods[1], "n4")
    rig.cluster.add_pod(pods[2])
    rig.run()
    assert "default/low" not in rig.cluster.pods
    assert rig.notes("default/g-2", "Preempting") == ["Preempting 1 pod(s) of lower priority (at most 1) on node(s) n5"]
    rig.later(2)
    now = rig.cluster.bound()
    assert (now["default/g-0"], now["default/g-1"], now["default/g-2"]) == ("n3", "n4", "n5")
    assert rig.s.failures.restarted == 0
    rig.s.cache.ledger.check_invariants()


def test_an_elastic_gang_at_its_minimum_keeps_its_survivors_when_the_rest_does_not_fit():
    """Racks of two: a gang of six 8-GPU members, min 2, runs with four (every node). One node dies:
    neither its member nor the two never placed fit anywhere, nor does the whole gang; the three
    survivors still make the minimum, so they run on (they were deleted to wait in the queue)."""
    rig = Rig(per_rack=2)
    for p in o.our_gang("g", 6, 8, gang_min_members="2"):
        rig.cluster.add_pod(p)
    rig.run()
    bound = {k: v for k, v in rig.cluster.bound().items() if k.startswith("default/g-")}
    assert len(bound) == 4
    victim = sorted(bound)[0]
    snapshot = dict(rig.cluster.pods)
    rig.set_ready(bound[victim], "False")
    rig.later(31)
    (new,) = rig.recreate({victim: snapshot[victim]})
    rig.run()
    now = rig.cluster.bound()
    assert {k: now.get(k) for k in bound if k != victim} == {k: v for k, v in bound.items() if k != victim}
    assert new not in now and rig.s.failures.restarted == 0
    waiting = sorted(k for k in rig.cluster.pods if k.startswith("default/g-") and k not in now)
    assert len(waiting) == 3
    assert any("its 3 surviving members make its minimum 2; the rest do not fit" in n
               for k in waiting for n in rig.notes(k, "FailedScheduling"))


def test_an_elastic_gangs_later_pods_take_the_room_there_is_next_to_its_running_members():
    """An elastic gang (min 2 of 4) runs with two members in rack r1; of its two later pods one fits
    there (n5): it is placed, the other waits (they were completed all or nothing, so both waited)."""
    rig = Rig()
    partly_bound(rig, 4, ("n3", "n4"), required_level="rack", gang_min_members="2")
    now = rig.cluster.bound()
    assert now["default/g-2"] == "n5" and "default/g-3" not in now
    (note,) = rig.notes("default/g-3", "FailedScheduling")
    assert note.startswith("gang default/g: 3 members are bound; the rest do not fit next to them (")
    assert rig.s.failures.completed == 1 and rig.s.failures.restarted == 0


def test_a_partly_bound_gang_reaching_its_minimum_next_to_its_bound_member_is_not_restarted():
    """A gang of four, min 3, has g-0 bound on n3; rack r1 has room for two more (n4, n5), which
    makes the minimum: they are placed and g-0 runs on (it was deleted because all three did not fit)."""
    rig = Rig()
    partly_bound(rig, 4, ("n3",), required_level="rack", gang_min_members="3")
    now = rig.cluster.bound()
    assert now["default/g-0"] == "n3" and {now["default/g-1"], now["default/g-2"]} == {"n4", "n5"}
    assert "default/g-3" not in now and not rig.notes("default/g-0", "GangRestart")
    assert rig.s.failures.restarted == 0
    rig.s.cache.ledger.check_invariants()


def test_an_elastic_sliced_gangs_later_pods_are_placed_in_whole_slices():
    """Slices of two at rack level, min 2 of 6, one slice running on n3 n4. Of the four later pods one
    whole slice fits (rack r0); the second would need two nodes of one rack and only n2 and n5 are
    left: it waits whole, never one member alone."""
    rig = Rig()
    partly_bound(rig, 6, ("n3", "n4"), slice_size="2", slice_level="rack", gang_min_members="2")
    now = {k: n for k, n in rig.cluster.bound().items() if k not in ("default/g-0", "default/g-1")}
    assert len(now) == 2 and {rig.rack(n) for n in now.values()} == {"r0"}
    assert rig.s.failures.restarted == 0


def test_a_member_bound_to_a_node_toposched_does_not_know_counts_towards_the_minimum():
    """An elastic gang (min 2 of 3) has g-0 bound to node x, which toposched does not know, and g-1 on
    n3; g-2 does not fit in rack r1. Two members run, the minimum: g-1 stays (it was deleted as if
    the gang were short of its minimum, and g-0 left running)."""
    rig = Rig()
    busy(rig, "busy-4", "n4", 8)
    busy(rig, "busy-5", "n5", 8)
    partly_bound(rig, 3, ("x", "n3"), required_level="rack", gang_min_members="2")
    assert rig.cluster.bound()["default/g-1"] == "n3" and rig.s.failures.restarted == 0
    (note,) = rig.notes("default/g-2", "FailedScheduling")
    assert note.startswith("gang default/g: 2 members are bound; the rest do not fit next to them (")


def test_a_restarted_gang_loses_its_member_on_a_node_toposched_does_not_know_too():
    """The same gang of three without a minimum: it restarts, and g-0 on node x goes with g-1 (no
    gang stays partly bound)."""
    rig = Rig()
    busy(rig, "busy-4", "n4", 8)
    busy(rig, "busy-5", "n5", 8)
    partly_bound(rig, 3, ("x", "n3"), required_level="rack")
    assert "default/g-0" not in rig.cluster.pods and "default/g-1" not in rig.cluster.pods
    for key in ("default/g-0", "default/g-1"):
        (note,) = rig.notes(key, "GangRestart")
        assert note.startswith("Deleted by toposched: gang default/g has 2 bound members, short of its minimum 3")


def test_an_elastic_gang_short_of_its_minimum_after_a_failure_is_repaired_with_the_replacements_that_fit():
    """A gang of five 4-GPU members, min 4, runs with four on n3 and n4 (rack r1; rack r0 is full).
    n3 dies with two; its replacements and the fifth pod do not all fit next to the survivors, nor
    does the whole gang anywhere, but two fit on n5, which makes the minimum again: they are
    placed and the survivors run on (they were deleted to wait in the queue)."""
    rig = Rig()
    for n in ("n0", "n1", "n2"):
        busy(rig, f"busy-{n}", n, 8)
    pods = o.our_gang("g", 5, 4, required_level="rack", gang_min_members="4")
    for pod, n in zip(pods, ("n3", "n3", "n4", "n4"), strict=False):
        bind_directly(rig, pod, n)
    rig.run()
    snapshot = dict(rig.cluster.pods)
    rig.set_ready("n3", "False")
    rig.later(31)
    new = rig.recreate({k: snapshot[k] for k in ("default/g-0", "default/g-1")})
    rig.cluster.add_pod(pods[4])
    rig.run()
    now = rig.cluster.bound()
    assert now["default/g-2"] == now["default/g-3"] == "n4" and [now.get(k) for k in new] == ["n5", "n5"]
    assert rig.s.failures.restarted == 0 and rig.s.failures.repaired == 1
    assert all(rig.notes(k, "GangRepaired") for k in new)
    (note,) = rig.notes("default/g-4", "FailedScheduling")
    assert note.startswith("gang default/g: 4 members are bound; the rest do not fit next to them (")
