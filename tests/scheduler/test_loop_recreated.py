"""Pods deleted and re-created under the same name (a new uid) around their binding, pods that
change gangs, and a restarted job's old members: no GPU leaks, no gang binds partially, no
pod is left pending outside the queue."""

from __future__ import annotations

import threading
import time

from models.spec import LevelSpec
from scheduler.fakes import InMemoryCluster, RecordingEvents
from scheduler.loop import Scheduler
from scheduler.serve_config import BackoffConfig, ServeConfig
from tests.clock import ManualClock
from tests.integration import objects as o
from tests.scheduler.rig import LoopRig


class HeldBinder:
    """The cluster's binder, with the bind of pod ``held`` stopped before the API until ``go``."""

    def __init__(self, cluster: InMemoryCluster, held: str) -> None:
        self.cluster, self.held = cluster, held
        self.waiting, self.go = threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.cluster, name)

    def bind(self, ref, node, annotations):
        if ref.key == self.held and not self.go.is_set():
            self.waiting.set()
            assert self.go.wait(10)
        self.cluster.bind(ref, node, annotations)


def _threaded(cluster: InMemoryCluster, binder, nodes: int) -> tuple[Scheduler, ManualClock]:
    clock = ManualClock()
    cfg = ServeConfig(levels=[LevelSpec(name="rack", label=o.RACK_LABEL)],
                      backoff=BackoffConfig(initial_s=1, max_s=10, unschedulable_retry_s=60))
    s = Scheduler(cfg, binder, RecordingEvents(), clock=clock, bind_workers=1, background_reporting=False)
    for i in range(nodes):
        cluster.add_node(o.node(f"n{i}", 8, rack="r0"))
    cluster.connect(s)
    s.step()
    return s, clock


def _settle(s: Scheduler, clock: ManualClock, rounds: int) -> None:
    for _ in range(rounds):
        time.sleep(0.02)
        s.step()
        clock.now += 15


def _recreate(cluster: InMemoryCluster, key: str, pod: dict) -> None:
    old = cluster.pods.pop(key)
    cluster._emit("pods", "DELETED", old)
    cluster.add_pod(pod)
    assert cluster.pods[key]["metadata"]["uid"] != old["metadata"]["uid"]


class DeletedFirst(HeldBinder):
    """The pod is deleted just before its bind reaches the API (404); the answer comes back to
    the scheduler only at ``go``."""

    def bind(self, ref, node, annotations):
        if self.go.is_set():  # the re-created pod binds normally
            return self.cluster.bind(ref, node, annotations)
        old = self.cluster.pods.pop(ref.key)
        self.cluster._emit("pods", "DELETED", old)
        try:
            self.cluster.bind(ref, node, annotations)
        finally:
            self.waiting.set()
            assert self.go.wait(10)


def test_a_pod_recreated_while_its_bind_is_in_flight_is_placed_after_the_bind_fails():
    for binder_type, failure in ((HeldBinder, "uid conflict"), (DeletedFirst, "not found")):
        cluster = InMemoryCluster()
        binder = binder_type(cluster, "default/p")
        s, clock = _threaded(cluster, binder, nodes=1)
        cluster.add_pod(o.pod("p", 8))
        s.step()  # decided; the bind (or its answer) waits
        assert binder.waiting.wait(5)
        if "default/p" in cluster.pods:
            _recreate(cluster, "default/p", o.pod("p", 8))
        else:
            cluster.add_pod(o.pod("p", 8))
        s.step()
        binder.go.set()
        _settle(s, clock, 10)
        s.close()
        assert cluster.bound() == {"default/p": "n0"}, failure
        assert cluster.pods["default/p"]["metadata"]["uid"] == s.cache.bound["default/p"].uid


def test_a_gang_member_recreated_while_the_gang_binds_rolls_back_and_the_new_member_joins_the_retry():
    cluster = InMemoryCluster()
    binder = HeldBinder(cluster, "default/g-1")
    s, clock = _threaded(cluster, binder, nodes=2)
    for p in o.our_gang("g", 2, 8):
        cluster.add_pod(p)
    s.step()  # g-0 binds, g-1's bind waits
    assert binder.waiting.wait(5)
    _recreate(cluster, "default/g-1", o.our_gang("g", 2, 8)[1])
    s.step()
    binder.go.set()  # the held bind fails (uid precondition): the gang rolls back
    _settle(s, clock, 5)
    if "default/g-0" not in cluster.pods:  # the rollback deleted g-0; its controller re-creates it
        cluster.add_pod(o.our_gang("g", 2, 8)[0])
    _settle(s, clock, 30)
    s.close()
    assert set(cluster.bound()) == {"default/g-0", "default/g-1"}


def test_a_pod_recreated_while_the_watch_missed_our_binding_gets_the_gpus_back():
    rig = LoopRig(nodes=1)
    rig.add(o.pod("p", 8))
    rig.s.step()  # decided and bound; the watch event is still in the inbox
    assert rig.cluster.bound() == {"default/p": "n0"}
    while not rig.s.inbox.empty():  # the watch breaks: our binding is never seen
        rig.s.inbox.get_nowait()
    rig.cluster.sink = None
    rig.cluster.pods.pop("default/p")
    rig.cluster.add_pod(o.pod("p", 8))  # re-created, pending
    rig.cluster.connect(rig.s)  # relist
    for _ in range(3):
        rig.clock.now += 70
        rig.run()
    assert rig.cluster.bound() == {"default/p": "n0"}
    assert rig.s.cache.ledger.state("default/p").value == "BOUND"
    rig.s.cache.ledger.check_invariants()


def _in_gang(pod: dict, gang: str, size: int) -> dict:
    ann = {**pod["metadata"]["annotations"], "toposched.io/gang": gang, "toposched.io/gang-size": str(size)}
    return {**pod, "metadata": {**pod["metadata"], "annotations": ann}}


def test_a_pod_moved_to_another_gang_leaves_the_old_one():
    rig = LoopRig()
    a0, a1, a2 = o.our_gang("a", 3, 8)
    rig.add(a0, a1)
    rig.run()
    rig.cluster.add_pod(_in_gang(rig.cluster.pods["default/a-1"], "b", 3))
    rig.run()
    rig.add(a2)  # gang a has a-0 and a-2: two of three
    rig.run()
    assert not rig.cluster.bound()
    rig.add(*o.our_gang("b", 3, 8)[1:])  # gang b complete: a-1, b-1, b-2
    rig.run()
    assert set(rig.cluster.bound()) == {"default/a-1", "default/b-1", "default/b-2"}


def test_a_restarted_jobs_terminating_members_do_not_count_for_its_new_members():
    rig = LoopRig(nodes=3, per_rack=3)
    rig.s.apply("podgroups.scheduling.x-k8s.io", "ADDED", o.podgroup("job", 2))
    rig.add(*o.gang_pods("job", 2, 8))
    rig.run()
    assert set(rig.cluster.bound()) == {"default/job-0", "default/job-1"}
    for key in ("default/job-0", "default/job-1"):  # being deleted, still on their nodes
        p = rig.cluster.pods[key]
        rig.cluster.add_pod({**p, "metadata": {**p["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}})
    new = [o.pod(f"job-new-{i}", 8, labels={"scheduling.x-k8s.io/pod-group": "job"}) for i in range(2)]
    rig.add(*new)
    rig.run()
    assert not [k for k in rig.cluster.bound() if "new" in k]  # one node free: both or neither
    rig.cluster.finish_pod("default/job-0")
    rig.clock.now += 70
    rig.run()
    assert {k for k in rig.cluster.bound() if "new" in k} == {"default/job-new-0", "default/job-new-1"}
