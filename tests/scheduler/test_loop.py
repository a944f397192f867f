"""The scheduling loop on the in-memory cluster: deterministic (bindings inline, injected clock).

Cluster used unless a test says otherwise::

    rack r0: n0 n1      rack r1: n2 n3      (8 GPUs each)
"""

from __future__ import annotations

import json

import pytest

from scheduler.loop import Scheduler
from tests.integration import objects as o
from tests.scheduler.rig import LoopRig

ASSIGNMENT = "toposched.io/assignment"


class Rig(LoopRig):
    """Four nodes in two racks (see the module docstring)."""


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_single_pods_are_bound_with_their_gpus_recorded(rig):
    rig.add(o.pod("a", 2), o.pod("b", 4))
    rig.run()
    bound = rig.cluster.bound()
    assert set(bound) == {"default/a", "default/b"}
    gpus = [json.loads(rig.cluster.pods[k]["metadata"]["annotations"][ASSIGNMENT])["gpus"] for k in sorted(bound)]
    assert [len(g) for g in gpus] == [2, 4]
    if bound["default/a"] == bound["default/b"]:
        assert not set(gpus[0]) & set(gpus[1])
    rig.s.cache.ledger.check_invariants()
    assert all(rig.s.cache.ledger.state(k).value == "BOUND" for k in bound)


def test_gang_all_or_nothing_in_one_rack(rig):
    rig.cluster.add_pod(o.pod("x", 8))  # takes one node of some rack
    rig.run()
    rig.add(*o.our_gang("g", 2, 8, required_level="rack"))
    rig.run()
    bound = rig.cluster.bound()
    nodes = [bound[f"default/g-{i}"] for i in range(2)]
    assert {int(n[1:]) // 2 for n in nodes} == {1 - int(bound["default/x"][1:]) // 2}


def test_unschedulable_pod_gets_one_event_and_a_condition_however_often_it_is_retried(rig):
    rig.add(o.pod("huge", 16))
    rig.run()
    for i in range(5):  # cluster changes: the pod is tried again, the verdict is the same
        rig.clock.now += 11
        rig.cluster.add_node(o.node("n0", 8, rack="r0", labels={"touched": str(i)}))
        rig.run()
    notes = rig.notes("default/huge", "FailedScheduling")
    assert notes == ["0/4 nodes are available: 4 had fewer than 16 free GPUs"]
    cond = rig.cluster.pods["default/huge"]["status"]["conditions"][-1]
    assert (cond["type"], cond["status"], cond["reason"]) == ("PodScheduled", "False", "Unschedulable")
    assert rig.s.metrics.schedule_attempts.labels(result="unschedulable", profile="toposched")._value.get() == 6


def test_pod_fits_after_capacity_is_freed(rig):
    rig.add(*(o.pod(f"f{i}", 8) for i in range(4)), o.pod("late", 8))
    rig.run()
    assert "default/late" not in rig.cluster.bound()
    rig.cluster.finish_pod(next(k for k in rig.cluster.bound() if k != "default/late"))
    rig.clock.now += 2  # past the 1 s backoff
    rig.run()
    assert "default/late" in rig.cluster.bound()


def test_failed_member_rolls_the_gang_back(rig):
    rig.add(*o.our_gang("g", 3, 8))
    rig.cluster.fail("default/g-1", 500)
    rig.run()
    assert rig.cluster.bound() == {}
    # members bound before the failure were deleted, with an event
    gone = {"default/g-0"} | ({"default/g-2"} if "default/g-2" not in rig.cluster.pods else set())
    assert "default/g-0" not in rig.cluster.pods
    for key in gone:
        assert rig.notes(key, "GangRollback")
    assert "rolled back" in rig.notes("default/g-1", "FailedScheduling")[0]
    assert rig.s.metrics.gang_rollbacks._value.get() == 1
    rig.s.cache.ledger.check_invariants()
    # the controller re-creates the deleted members; after the backoff the gang is placed whole
    for key in gone:
        rig.add(o.our_gang("g", 3, 8)[int(key[-1])])
    rig.clock.now += 2
    rig.run()
    assert len(rig.cluster.bound()) == 3


def test_a_rollback_deletion_the_api_refuses_is_tried_again_and_the_member_is_not_built_upon(rig):
    """g-0 is bound, g-1's binding fails, and deleting g-0 fails twice. g-0 must not stay as a
    running member the gang is completed next to: it is deleted again (after 2 s, then 4 s)."""
    pods = o.our_gang("g", 2, 8)
    rig.cluster.fail("default/g-1", 500)
    rig.cluster.fail("default/g-0", 403, times=2, operation="delete")
    rig.add(*pods)
    rig.run()
    assert rig.cluster.bound() == {"default/g-0": rig.cluster.bound()["default/g-0"]}
    (note,) = rig.notes("default/g-0", "DeleteFailed")
    assert note.startswith("toposched could not delete this pod (gang default/g is rolled back): ")
    assert note.endswith("; it tries again until the pod is gone")
    assert rig.s.cache.bound_in_gang("default/g") == 1
    rig.clock.now += 1.5  # past the gang's backoff, before the deletion's retry
    rig.run()
    assert list(rig.cluster.bound()) == ["default/g-0"]  # g-1 was not completed next to it
    assert rig.s.failures.completed == 0
    rig.clock.now += 1  # 2.5 s: the first retry, refused again
    rig.run()
    assert "default/g-0" in rig.cluster.pods
    rig.clock.now += 4  # the second retry goes through
    rig.run()
    assert "default/g-0" not in rig.cluster.pods
    assert len(rig.notes("default/g-0", "DeleteFailed")) == 1  # said once, not per retry
    assert rig.s.metrics.api_errors.labels(operation="delete", code="403")._value.get() == 2
    rig.add(pods[0])  # the controller re-creates it
    rig.clock.now += 11
    rig.run()
    assert set(rig.cluster.bound()) == {"default/g-0", "default/g-1"}
    rig.s.cache.ledger.check_invariants()


def test_gang_short_of_members_waits_and_says_so_after_its_timeout(rig):
    pods = o.our_gang("g", 3, 1, gang_timeout_seconds="30")
    rig.add(pods[0], pods[1])
    rig.run()
    assert rig.cluster.bound() == {} and rig.notes("default/g-0", "FailedScheduling") == []
    rig.clock.now += 31
    rig.run()
    assert rig.notes("default/g-0", "FailedScheduling") == [
        "gang default/g: 2 of its 3 minimum members exist after 31s; waiting for the rest"]
    rig.add(pods[2])
    rig.run()
    assert len(rig.cluster.bound()) == 3


def test_a_rolled_back_gangs_wait_for_its_recreated_members_counts_from_the_rollback(rig):
    """The gang waited 200 s for room, then a binding failed and the rollback deleted g-0. While
    its controller re-creates g-0 the gang is short of members: that wait is a new one, not
    200 s old, so no "exist after 200s" right away."""
    for i in range(4):
        rig.add(o.pod(f"busy-{i}", 8))
    rig.run()
    pods = o.our_gang("g", 2, 8, gang_timeout_seconds="30")
    rig.add(*pods)
    rig.run()
    rig.clock.now += 200
    rig.run()
    rig.cluster.fail("default/g-1", 500)
    rig.cluster.finish_pod("default/busy-0")
    rig.cluster.finish_pod("default/busy-1")
    rig.clock.now += 61  # the unschedulable retry
    rig.run()
    assert "default/g-0" not in rig.cluster.pods and rig.notes("default/g-0", "GangRollback")
    assert not [n for n in rig.notes("default/g-1", "FailedScheduling") if "exist after" in n]
    rig.clock.now += 31
    rig.run()
    assert [n for n in rig.notes("default/g-1", "FailedScheduling") if "exist after" in n] == [
        "gang default/g: 1 of its 2 minimum members exist after 31s; waiting for the rest"]
    rig.add(pods[0])
    rig.run()
    assert set(rig.cluster.bound()) == {"default/g-0", "default/g-1", "default/busy-2", "default/busy-3"}


def test_gang_waits_for_its_podgroup(rig):
    rig.add(*o.gang_pods("g", 2, 1))
    rig.run()
    assert rig.cluster.bound() == {}
    assert "not found" in rig.notes("default/g-0", "WaitingForPodGroup")[0]
    rig.s.apply("podgroups.scheduling.x-k8s.io", "ADDED", o.podgroup("g", 2))
    rig.run()
    assert len(rig.cluster.bound()) == 2


def test_malformed_pod_is_reported_and_others_go_on(rig):
    rig.add(o.pod("bad", 1, annotations={"toposched.io/gpu-milli": "-5"}), o.pod("good", 1))
    rig.run()
    assert set(rig.cluster.bound()) == {"default/good"}
    note = rig.notes("default/bad", "FailedScheduling")[0]
    assert "toposched.io/gpu-milli" in note and "-5" in note


def test_standby_does_not_bind_and_a_lost_lease_stops_binding(rig):
    rig.leading = False
    rig.add(o.pod("a", 1))
    rig.run()
    assert rig.cluster.bound() == {}
    rig.leading = True
    rig.run()
    assert set(rig.cluster.bound()) == {"default/a"}


def test_restart_replays_bound_pods_and_hands_out_no_gpu_twice():
    first = Rig(nodes=1)
    first.add(o.pod("a", 3), o.pod("b", 3))
    first.run()
    taken = {g for k in ("default/a", "default/b")
             for g in json.loads(first.cluster.pods[k]["metadata"]["annotations"][ASSIGNMENT])["gpus"]}
    # a new scheduler over the same objects (the old one's memory is gone)
    second = Scheduler(first.s.config, first.cluster, first.events, clock=first.clock, bind_workers=0,
                       background_reporting=False)
    first.cluster.connect(second)
    first.cluster.add_pod(o.pod("c", 2))
    for _ in range(5):
        second.step()
    c = json.loads(first.cluster.pods["default/c"]["metadata"]["annotations"][ASSIGNMENT])["gpus"]
    assert len(c) == 2 and not set(c) & taken
    second.cache.ledger.check_invariants()


def test_pod_bound_by_another_scheduler_gets_free_gpus_and_moves_off_recorded_ones():
    rig = Rig(nodes=1)
    other = o.pod("other", 2, scheduler="default-scheduler", node_name="n0")
    rig.add(other)
    rig.run()
    assert rig.s.cache.ledger.get("default/other").gpus == (0, 1)  # lowest free: a guess
    # a pod with recorded GPUs 0 and 1 shows up (bound before we started): the guess moves
    ours = o.pod("ours", 2, node_name="n0", annotations={
        ASSIGNMENT: json.dumps({"node": "n0", "gpus": [0, 1], "gpu_milli": 1000, "version": "toposched.io/v1"}),
        "toposched.io/gpus": "0,1"})
    rig.add(ours)
    rig.run()
    assert rig.s.cache.ledger.get("default/ours").gpus == (0, 1)
    assert rig.s.cache.ledger.get("default/other").gpus == (2, 3)
    rig.s.cache.ledger.check_invariants()


def test_replicas_of_one_deployment_carry_their_owner_to_the_engine(rig):
    for i in range(3):
        rig.add(o.pod(f"web-abc12-{i}", 1, owner=("ReplicaSet", "web-abc12"), labels={"pod-template-hash": "abc12"}))
    rig.run()
    assert len(rig.cluster.bound()) == 3
    owners = {a.owner for a in rig.s.cache.ledger.allocations()}
    assert owners == {"default/Deployment/web"}


def test_nodes_without_ready_condition_or_with_untolerated_taints_are_skipped():
    rig = Rig(nodes=0)
    rig.cluster.add_node(o.node("down", 8, rack="r0", ready=False))
    rig.cluster.add_node(o.node("tainted", 8, rack="r0", taints=[{"key": "node.kubernetes.io/not-ready",
                                                                   "effect": "NoSchedule"}]))
    rig.add(o.pod("p", 1))
    rig.run()
    assert rig.cluster.bound() == {}
    assert rig.notes("default/p", "FailedScheduling") == [
        "0/2 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready}, "
        "1 node(s) were not ready"]
    tolerant = o.pod("q", 1, tolerations=[{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                                           "effect": "NoSchedule"}])
    rig.add(tolerant)
    rig.run()
    assert rig.cluster.bound() == {"default/q": "tainted"}


def test_empty_cluster_says_so():
    rig = Rig(nodes=0)
    rig.add(o.pod("p", 1))
    rig.run()
    assert rig.notes("default/p", "FailedScheduling") == ["0/0 nodes are available"]


def test_relist_after_a_watch_gap_frees_deleted_pods_and_queues_new_ones():
    rig = Rig(nodes=1)
    rig.add(o.pod("a", 8))
    rig.run()
    sink, rig.cluster.sink = rig.cluster.sink, None  # the watch is down: nothing reaches the scheduler
    rig.cluster.finish_pod("default/a")
    rig.cluster.add_pod(o.pod("b", 8))
    rig.cluster.connect(sink)  # re-list
    rig.run()
    assert rig.cluster.bound() == {"default/b": "n0"}
    rig.s.cache.ledger.check_invariants()


def test_status_only_updates_do_not_retry_an_unschedulable_pod(rig):
    rig.add(o.pod("huge", 16))
    rig.run()
    attempts = rig.s.queue.get("default/huge").attempts
    pod = rig.cluster.pods["default/huge"]
    rig.cluster.add_pod({**pod, "status": {**pod["status"], "message": "something else"}})
    rig.run()
    assert rig.s.queue.get("default/huge").attempts == attempts


def test_a_pending_pod_is_read_again_when_it_changes(rig):
    """The request read from a pod is reused while the pod is unchanged, and only then."""
    models = "toposched.io/gpu-models"
    rig.add(o.pod("picky", 1, annotations={models: "NVIDIA-A100-SXM4-80GB"}))
    rig.run()
    assert "default/picky" not in rig.cluster.bound()
    assert rig.s._requests["default/picky"][2].gpu_models == ("NVIDIA-A100-SXM4-80GB",)
    pod = rig.cluster.pods["default/picky"]
    meta = {**pod["metadata"], "annotations": {models: "NVIDIA-H100-80GB-HBM3"}}
    rig.cluster.add_pod({**pod, "metadata": meta})
    rig.clock.now += 2
    rig.run()
    assert "default/picky" in rig.cluster.bound()
    assert "default/picky" not in rig.s._requests  # bound: nothing kept
