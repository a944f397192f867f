"""Objects of the wrong shape never stop the loop: each is left out, named in the log or in an
event, and everything else in the same list or step goes on.

The API server refuses such objects for built-in kinds; custom resources without a schema
(PodGroups, Kubeflow jobs), and our own fakes in other tests, can carry anything.
"""

from __future__ import annotations

import logging

import pytest

from tests.integration import objects as o
from tests.scheduler.rig import LoopRig


def _first_lists(nodes, pods) -> LoopRig:
    """A rig whose scheduler's first node and pod lists are ``nodes`` and ``pods``."""
    rig = LoopRig(nodes=0)
    rig.cluster.sink = None
    while not rig.s.inbox.empty():  # the rig's own (empty) first lists
        rig.s.inbox.get_nowait()
    for n in nodes:
        rig.cluster.add_node(n)
    for p in pods:
        rig.cluster.add_pod(p)
    rig.cluster.connect(rig.s)
    return rig


@pytest.mark.parametrize("taints", [5, [{"key": ["x"], "effect": "NoExecute"}]], ids=["number", "list-key"])
def test_a_node_with_unreadable_taints_is_left_out_and_the_rest_is_scheduled(taints):
    rig = LoopRig()
    rig.run()
    bad = o.node("nbad", 8, rack="r9")
    bad["spec"]["taints"] = taints
    rig.cluster.add_node(bad)
    rig.add(o.pod("p", 1))
    rig.run()
    assert rig.cluster.bound()["default/p"] in {"n0", "n1", "n2", "n3"}
    assert "spec.taints" in rig.s.cache.invalid_nodes["nbad"]


def test_one_unreadable_pod_in_the_first_list_does_not_keep_the_others_from_being_scheduled(caplog):
    bad = o.pod("bad", 1)
    bad["spec"] = "garbage"
    rig = _first_lists([o.node(f"n{i}", 8, rack="r0") for i in range(2)], [bad, o.pod("good", 1)])
    with caplog.at_level(logging.WARNING, logger="toposched.loop"):
        rig.run()
    assert "pods" in rig.s.synced
    assert rig.cluster.pods["default/good"]["spec"].get("nodeName")
    assert any("bad" in r.getMessage() and "spec: must be a mapping, not str" in r.getMessage()
               for r in caplog.records)


def test_one_unreadable_node_in_the_first_list_is_left_out():
    bad = o.node("nbad", 8, rack="r0")
    bad["status"] = ["garbage"]
    rig = _first_lists([bad, o.node("n0", 8, rack="r0")], [o.pod("p", 1)])
    rig.run()
    assert rig.cluster.bound() == {"default/p": "n0"}


def test_a_relist_with_an_unreadable_node_still_applies_every_other_change():
    rig = LoopRig(nodes=3, per_rack=3)
    rig.run()
    rig.cluster.sink = None  # the watch breaks; meanwhile n1 is deleted and a bad node appears
    rig.cluster.remove_node("n1")
    bad = o.node("a-bad", 8, rack="r0")
    bad["spec"] = ["garbage"]
    rig.cluster.nodes = {"a-bad": bad, **rig.cluster.nodes}
    rig.cluster.connect(rig.s)
    rig.run()
    assert set(rig.s.cache.nodes) == {"n0", "n2"}
    assert rig.s.cache.arrays.node_names == ("n0", "n2")


def test_a_relist_keeps_what_it_knew_of_an_object_that_became_unreadable():
    rig = LoopRig(nodes=2, per_rack=2)
    rig.add(o.pod("p", 8))
    rig.run()
    node = rig.cluster.bound()["default/p"]
    rig.cluster.sink = None
    broken = dict(rig.cluster.pods["default/p"])
    broken["status"] = "garbage"
    rig.cluster.pods["default/p"] = broken
    rig.cluster.connect(rig.s)
    rig.run()
    assert rig.s.cache.bound["default/p"].node == node  # not taken for deleted: its GPUs stay held
    rig.add(o.pod("q", 8))
    rig.run()
    assert rig.cluster.bound()["default/q"] != node


@pytest.mark.parametrize("resource,obj", [
    ("nodes", {**o.node("nx", 8, rack="r0"), "metadata": ["garbage"]}),
    ("pods", {**o.pod("px", 1), "metadata": "garbage", "spec": ["garbage"]}),
    ("pods", {**o.pod("py", 1), "spec": ["garbage"]}),
], ids=["node-metadata", "pod-metadata", "pod-spec"])
def test_an_unreadable_watch_event_is_logged_and_skipped(resource, obj, caplog):
    rig = LoopRig()
    rig.run()
    rig.s.apply(resource, "ADDED", obj)
    with caplog.at_level(logging.WARNING, logger="toposched.loop"):
        rig.s.step()
    assert any("left out" in r.getMessage() for r in caplog.records)
    rig.add(o.pod("after", 1))
    rig.run()
    assert "default/after" in rig.cluster.bound()


def test_a_node_name_kubernetes_would_refuse_is_left_out_and_later_changes_are_seen():
    rig = LoopRig()
    rig.run()
    rig.cluster.add_node(o.node("GPU_Node", 8, rack="r0"))
    rig.run()
    assert "not a valid Kubernetes name" in rig.s.cache.invalid_nodes["GPU_Node"]
    rig.cluster.remove_node("n3")
    rig.run()
    assert rig.s.cache.arrays.node_names == ("n0", "n1", "n2")


def _native_podgroup(topology):
    return {"apiVersion": "scheduling.k8s.io/v1alpha3", "kind": "PodGroup",
            "metadata": {"name": "pg", "namespace": "default"},
            "spec": {"schedulingPolicy": {"gang": {"minCount": 2}}, "schedulingConstraints": {"topology": topology}}}


def _volcano_podgroup(network_topology):
    return {"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup",
            "metadata": {"name": "pg", "namespace": "default"},
            "spec": {"minMember": 2, "networkTopology": network_topology}}


def _pytorchjob_member(i: int):
    pod = o.pod(f"m{i}", 8, labels={"training.kubeflow.org/job-name": "pg"})
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "pg",
                                           "uid": "u", "controller": True}]
    return pod


GROUP_CASES = {
    "native-topology-not-a-list": (
        "podgroups.scheduling.k8s.io", _native_podgroup({"key": o.RACK_LABEL}),
        lambda i: o.pod(f"m{i}", 8, schedulingGroup={"podGroupName": "pg"}),
        "spec.schedulingConstraints.topology: must be a list"),
    "volcano-networkTopology-not-a-mapping": (
        "podgroups.scheduling.volcano.sh", _volcano_podgroup(["hard"]),
        lambda i: o.pod(f"m{i}", 8, annotations={"scheduling.k8s.io/group-name": "pg"}),
        "spec.networkTopology: must be a mapping"),
    "pytorchjob-replicaspecs-not-a-mapping": (
        "pytorchjobs.kubeflow.org",
        {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "pg", "namespace": "default"},
         "spec": {"pytorchReplicaSpecs": [{"replicas": 2}]}},
        _pytorchjob_member, "spec.pytorchReplicaSpecs: must map replica types"),
}


@pytest.mark.parametrize("case", sorted(GROUP_CASES))
def test_a_group_object_field_of_the_wrong_type_is_named_on_the_pods(case):
    resource, obj, member, expected = GROUP_CASES[case]
    rig = LoopRig()
    rig.run()
    rig.s.apply(resource, "ADDED", obj)
    rig.add(member(0), member(1))
    rig.run()
    notes = rig.notes("default/m0", "FailedScheduling")
    assert notes and expected in notes[0] and "internal error" not in notes[0], notes
    assert not rig.cluster.bound()
