"""Nominations and deletions in the loop when pods go slowly, come back under the same name, or
their node fails: a nominated preemptor's room stays its own until it ends, an ended nomination
leaves no ``nominatedNodeName`` behind, and a pod re-created under a deleted pod's name is a
normal member again.

Deletions here leave the pod Terminating (``deletionTimestamp``) until ``finish_delete``, as a
real kubelet does; the rig's ``slow`` switch turns that on.
"""

from __future__ import annotations

from models.spec import LevelSpec
from scheduler.failures import NodeFailureConfig
from scheduler.fakes import InMemoryCluster, RecordingEvents
from scheduler.loop import Scheduler
from scheduler.serve_config import BackoffConfig, ServeConfig
from tests.clock import ManualClock
from tests.integration import objects as o

UNREACHABLE = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}


class SlowDeleteCluster(InMemoryCluster):
    """While ``slow``, a delete only marks the pod Terminating; ``finish_delete`` removes it."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = False
        self.terminating: set[str] = set()

    def delete(self, pod):
        if not self.slow:
            return super().delete(pod)
        with self._lock:
            old = self._pod(pod, "delete")
            new = self._stamp({**old, "metadata": {**old["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}})
            self.pods[pod.key] = new
            self.terminating.add(pod.key)
        self._emit("pods", "MODIFIED", new)

    def finish_delete(self, key: str) -> None:
        with self._lock:
            old = self.pods.pop(key)
            self.terminating.discard(key)
        self._emit("pods", "DELETED", old)


class Rig:
    def __init__(self, nodes: int, per_rack: int, **config) -> None:
        self.clock = ManualClock()
        self.cluster = SlowDeleteCluster()
        self.events = RecordingEvents()
        cfg = ServeConfig(levels=[LevelSpec(name="rack", label=o.RACK_LABEL)],
                          backoff=BackoffConfig(initial_s=1, max_s=10, unschedulable_retry_s=60),
                          node_failures=NodeFailureConfig(), **config)
        self.s = Scheduler(cfg, self.cluster, self.events, clock=self.clock, bind_workers=0,
                           background_reporting=False)
        for i in range(nodes):
            self.cluster.add_node(o.node(f"n{i}", 8, rack=f"r{i // per_rack}"))
        self.cluster.connect(self.s)

    def run(self) -> None:
        for _ in range(30):
            st = self.s.step()
            if not st.events and not st.decided:
                return

    def later(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.run()

    def add(self, *pods) -> None:
        for p in pods:
            self.cluster.add_pod(p)
        self.run()

    def bound(self) -> dict[str, str]:
        return self.cluster.bound()

    def nominated(self, key: str) -> str | None:
        return ((self.cluster.pods.get(key) or {}).get("status") or {}).get("nominatedNodeName")

    def set_taints(self, name: str, taints: list[dict]) -> None:
        self.cluster.add_node({**self.cluster.nodes[name], "spec": {"taints": taints}})

    def recreate(self, pod: dict, name: str | None = None) -> str:
        """``pod`` again, pending, with a new uid (under ``name`` if given)."""
        meta = {k: v for k, v in pod["metadata"].items() if k not in ("uid", "resourceVersion", "deletionTimestamp")}
        meta["name"] = name or meta["name"]
        spec = {k: v for k, v in pod["spec"].items() if k != "nodeName"}
        self.cluster.add_pod({**pod, "metadata": meta, "spec": spec, "status": {"phase": "Pending"}})
        return f"{meta.get('namespace', 'default')}/{meta['name']}"

    def notes(self, key: str, reason: str) -> list[str]:
        return [e.note for e in self.events.for_object(key, reason)]


def prio(pod: dict, priority: int) -> dict:
    return {**pod, "spec": {**pod["spec"], "priority": priority}}


def _lose_and_recreate_under_the_same_name(rig: Rig, key: str) -> str:
    node = rig.bound()[key]
    pod = rig.cluster.pods[key]
    rig.cluster.slow = True  # the lost pod stays Terminating, as on an unreachable node
    rig.set_taints(node, [UNREACHABLE])
    rig.run()
    assert key in rig.cluster.terminating
    rig.cluster.finish_delete(key)  # gone, and re-created by its controller before the next step
    rig.recreate(pod)
    rig.cluster.slow = False
    rig.run()
    return node


def test_a_member_recreated_under_its_name_is_handled_when_its_new_node_fails_too():
    rig = Rig(nodes=8, per_rack=4)
    rig.add(*o.our_gang("g", 3, 8, required_level="rack"))
    dead = _lose_and_recreate_under_the_same_name(rig, "default/g-1")
    second = rig.bound().get("default/g-1")
    assert second not in (None, dead)
    rig.set_taints(second, [UNREACHABLE])
    rig.later(1)
    rig.later(60)
    assert rig.bound().get("default/g-1") not in (second, dead)


def test_a_member_recreated_under_its_name_can_be_preempted():
    rig = Rig(nodes=4, per_rack=4)
    rig.add(*(prio(p, 1) for p in o.our_gang("g", 3, 8, required_level="rack")))
    dead = _lose_and_recreate_under_the_same_name(rig, "default/g-1")
    rig.set_taints(dead, [])
    rig.run()
    rig.add(prio(o.pod("filler", 8), 1000))  # the recovered node is taken
    assert {h.allocation.key: h.evictable for h in rig.s._holders()}["default/g-1"]
    rig.add(prio(o.pod("hi", 8), 100))  # only the priority-1 gang can make room
    assert rig.notes("default/hi", "Preempting")


def test_a_gang_repair_does_not_take_a_nominated_preemptors_room():
    rig = Rig(nodes=6, per_rack=3)
    rig.add(*(prio(p, 60) for p in o.our_gang("g", 2, 8, required_level="rack")))
    assert {rig.bound()["default/g-0"], rig.bound()["default/g-1"]} == {"n0", "n1"}
    rig.add(prio(o.pod("low", 8), 1))  # n2, the rest of rack r0
    rig.add(*(prio(o.pod(f"mid{i}", 8), 70) for i in range(3)))  # rack r1
    rig.add(prio(o.pod("hi", 8), 100))
    assert "default/low" not in rig.cluster.pods and rig.nominated("default/hi") == "n2"
    lost = dict(rig.cluster.pods["default/g-1"])
    rig.set_taints("n1", [UNREACHABLE])
    rig.run()
    replacement = rig.recreate(lost, name="g-1-r1")
    rig.run()
    assert rig.bound().get(replacement) != "n2"


def test_a_lower_priority_pod_in_the_same_batch_does_not_take_a_half_freed_nominated_room():
    rig = Rig(nodes=2, per_rack=2)
    rig.add(prio(o.pod("l0", 4), 1), prio(o.pod("l1", 4), 1))
    rig.add(prio(o.pod("m", 8), 50))
    node = rig.bound()["default/l0"]
    rig.cluster.slow = True
    rig.add(prio(o.pod("hi", 8), 100))
    assert rig.nominated("default/hi") == node
    rig.add(prio(o.pod("late", 4), 1))
    assert "default/late" not in rig.bound()
    rig.cluster.finish_delete("default/l0")  # one victim gone, the other still terminating
    rig.later(11)  # hi and late are retried in one batch
    assert rig.bound().get("default/late") != node


def test_a_nomination_on_a_node_that_fails_ends_and_the_preemptor_plans_again():
    rig = Rig(nodes=2, per_rack=2)
    rig.add(prio(o.pod("l0", 8), 1), prio(o.pod("l1", 8), 2))
    victim_node = rig.bound()["default/l0"]
    rig.cluster.slow = True
    rig.add(prio(o.pod("hi", 8), 100))
    assert rig.nominated("default/hi") == victim_node
    rig.set_taints(victim_node, [UNREACHABLE])  # its victim will never finish terminating
    rig.run()
    rig.cluster.slow = False
    start = rig.clock.now
    while "default/hi" not in rig.bound() and rig.clock.now - start < 400:
        rig.later(10)
    assert rig.notes("default/l1", "Preempted") and rig.clock.now - start < 60


def test_a_nomination_that_ends_without_a_new_plan_clears_nominated_node_name():
    rig = Rig(nodes=2, per_rack=2, preemption_timeout_s=60)
    rig.add(prio(o.pod("l0", 8), 1), prio(o.pod("m", 8), 500))
    rig.add(prio(o.pod("hi", 8), 100))
    node = rig.nominated("default/hi")
    assert node is not None
    rig.add(prio(o.pod("urgent", 8), 1000))  # a higher priority takes hi's room (allowed)
    assert rig.bound().get("default/urgent") == node
    for _ in range(20):
        rig.later(11)
    assert "default/hi" not in rig.s._nominations
    assert rig.nominated("default/hi") is None


def test_a_nominated_unit_does_not_preempt_again_until_the_nomination_times_out():
    """Its victim stays Terminating (its node's kubelet never confirms): the preemptor waits on
    its nomination however often it is tried; after preemption_timeout_s it may preempt again."""
    rig = Rig(nodes=2, per_rack=2, preemption_timeout_s=60)
    rig.add(prio(o.pod("l0", 8), 1), prio(o.pod("l1", 8), 2))
    l1_node = rig.bound()["default/l1"]
    rig.cluster.slow = True
    rig.add(prio(o.pod("hi", 8), 100))
    attempts = rig.s.metrics.preemption_attempts._value
    assert attempts.get() == 1 and rig.notes("default/l0", "Preempted") and rig.nominated("default/hi")
    for _ in range(3):  # cluster changes make hi try again; it waits for its nomination
        rig.clock.advance(11)
        rig.cluster.add_node(o.node("n0", 8, rack="r0", labels={"touch": str(rig.clock.now)}))
        rig.run()
    assert attempts.get() == 1
    rig.cluster.slow = False
    rig.later(30)  # 63 s on: the nomination expires and hi preempts again (l0 still terminating)
    assert attempts.get() == 2 and rig.notes("default/l1", "Preempted")
    rig.later(11)
    assert rig.bound().get("default/hi") == l1_node
