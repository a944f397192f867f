"""Preemption in the scheduling loop on the in-memory cluster (bindings inline, injected clock).

Cluster unless a test says otherwise: two 8-GPU nodes in one rack, filled with low-priority
pods before the test's high-priority unit arrives::

    rack r0: n0 n1      (8 GPUs each)
"""

from __future__ import annotations

import pytest

from scheduler import loop as loop_mod
from tests.integration import objects as o
from tests.scheduler.rig import LoopRig


class Rig(LoopRig):
    """Two nodes in one rack; ``add()`` runs the loop."""

    def __init__(self, nodes: int = 2, **config) -> None:
        super().__init__(nodes, per_rack=nodes, settle=True, steps=30, **config)

    def nominated(self, key: str) -> str | None:
        return (self.cluster.pods[key].get("status") or {}).get("nominatedNodeName")

    @property
    def attempts(self) -> float:
        return self.s.metrics.preemption_attempts._value.get()


def low(name: str, gpus: int, priority: int = 1, **kw) -> dict:
    return o.pod(name, gpus, priority=priority, **kw)


def prioritised(pod: dict, priority: int) -> dict:
    return {**pod, "spec": {**pod["spec"], "priority": priority}}


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_a_high_priority_pod_evicts_just_enough_and_binds_where_it_was_nominated(rig):
    rig.add(*(low(f"l{i}", 4) for i in range(4)))  # n0 [l0 l1]  n1 [l2 l3]
    rig.add(o.pod("hi", 4, priority=100))
    deleted = [k for k in (f"default/l{i}" for i in range(4)) if k not in rig.cluster.pods]
    assert len(deleted) == 1
    node = rig.nominated("default/hi")
    assert node is not None
    assert rig.notes(deleted[0], "Preempted") == [f"Preempted by default/hi on node {node}"]
    assert rig.notes("default/hi", "Preempting") == [f"Preempting 1 pod(s) of lower priority (at most 1) on node(s) {node}"]
    assert rig.notes("default/hi", "FailedScheduling")  # the verdict is still reported
    rig.clock.advance(2)  # past the backoff after the victim's deletion
    rig.run()
    assert rig.cluster.bound()["default/hi"] == node
    assert len(rig.cluster.bound()) == 4
    assert not rig.s._nominations
    rig.s.cache.ledger.check_invariants()
    hist = rig.s.metrics.preemption_victims
    assert (rig.attempts, hist._sum.get()) == (1, 1)


def test_a_victim_whose_deletion_is_refused_ends_the_nomination_and_the_pod_plans_again(rig):
    """The API refuses to delete the victim (403): the preemptor does not hold its nomination
    for preemption_timeout_s (300 s) waiting for a pod that is not going; it plans again after
    its backoff, and this time the eviction goes through."""
    rig.add(low("l0", 8), low("l1", 8))
    rig.cluster.fail("default/l0", 403, operation="delete")
    rig.cluster.fail("default/l1", 403, operation="delete")
    rig.add(o.pod("hi", 8, priority=100))
    assert {"default/l0", "default/l1"} <= set(rig.cluster.pods)
    assert rig.nominated("default/hi") is None  # the nomination ended and was cleared
    assert not rig.s._nominations
    assert rig.s.metrics.api_errors.labels(operation="delete", code="403")._value.get() == 1
    for _ in range(2):  # the second plan may pick the other pod, whose first deletion is refused too
        rig.clock.advance(11)
        rig.run()
    assert rig.cluster.bound().get("default/hi") in ("n0", "n1")
    assert rig.attempts in (2, 3)
    rig.s.cache.ledger.check_invariants()


def test_a_victim_already_gone_by_the_uid_precondition_keeps_the_nomination(rig):
    """A 409 on the victim's delete is the uid precondition: that pod is gone (another has its
    name now), so its room is coming and the preemptor keeps its nomination."""
    from scheduler.ports import KubeApiError

    rig.add(low("l0", 8), low("l1", 8))
    rig.add(o.pod("hi", 8, priority=100))
    (nom,) = rig.s._nominations.values()  # hi waits out its backoff, nominated
    (victim,) = nom.victims
    rig.s._on_victim_delete(victim, KubeApiError(409, "Conflict", "Precondition failed: UID in precondition"))
    assert rig.s._nominations and rig.nominated("default/hi") is not None


def test_a_victim_is_marked_disruption_target_before_it_is_deleted(rig):
    """kube-scheduler's DisruptionTarget condition, so a Job's podFailurePolicy can ignore preemptions."""
    seen: list[tuple[str, str, dict | None]] = []
    set_condition, delete = rig.cluster.set_condition, rig.cluster.delete

    def record_condition(pod, condition):
        seen.append(("condition", pod.key, dict(condition)))
        set_condition(pod, condition)

    def record_delete(pod):
        seen.append(("delete", pod.key, None))
        delete(pod)

    rig.cluster.set_condition, rig.cluster.delete = record_condition, record_delete
    rig.add(low("l0", 8), low("l1", 8))
    seen.clear()
    rig.add(o.pod("hi", 8, priority=100))
    victim = next(k for k in ("default/l0", "default/l1") if k not in rig.cluster.pods)
    marks = [(kind, c) for kind, key, c in seen if key == victim]
    assert [kind for kind, _ in marks] == ["condition", "delete"]
    cond = marks[0][1]
    assert (cond["type"], cond["status"], cond["reason"]) == ("DisruptionTarget", "True", "PreemptionByScheduler")
    assert cond["message"] == "toposched: preempting to accommodate a higher priority pod"


def test_the_nominated_place_is_not_given_to_a_lower_priority_pod_meanwhile(rig):
    rig.add(*(low(f"l{i}", 8) for i in range(2)))
    rig.add(o.pod("hi", 8, priority=100))
    node = rig.nominated("default/hi")
    assert node is not None and len(rig.cluster.bound()) == 1
    rig.add(low("late", 8))  # decided while hi waits out its backoff: hi's node counts as taken
    assert "default/late" not in rig.cluster.bound()
    rig.clock.advance(2)
    rig.run()
    assert rig.cluster.bound().get("default/hi") == node and "default/late" not in rig.cluster.bound()


def test_a_higher_priority_pod_may_take_a_nominated_place(rig):
    """kube-scheduler's rule: a pod respects nominations of its own priority or higher, not lower ones."""
    rig.add(*(low(f"l{i}", 8) for i in range(2)))
    rig.add(o.pod("hi", 8, priority=100))
    node = rig.nominated("default/hi")
    assert node is not None and len(rig.cluster.bound()) == 1
    rig.add(o.pod("equal", 8, priority=100, preemptionPolicy="Never"))  # same priority: the hold stands
    assert "default/equal" not in rig.cluster.bound() and len(rig.cluster.bound()) == 1
    rig.add(o.pod("urgent", 8, priority=1000))  # decided while hi waits out its backoff
    assert rig.cluster.bound().get("default/urgent") == node
    # hi's victim is gone and the room with it: on its next try hi plans again (the other
    # low-priority pod goes) instead of waiting out its nomination
    before = rig.attempts
    rig.clock.advance(11)
    rig.run()
    assert rig.attempts == before + 1 and set(rig.cluster.bound()) == {"default/urgent"}
    assert rig.nominated("default/hi") == "n1"
    rig.clock.advance(11)  # past its backoff
    rig.run()
    assert rig.cluster.bound() == {"default/urgent": node, "default/hi": "n1"}


def test_a_gang_victim_is_deleted_whole(rig):
    # the gang (two 4-GPU members, priority 1) is the lowest tier; hi needs only one member's GPUs
    rig.add(*(prioritised(p, 1) for p in o.our_gang("g", 2, 4)))
    rig.add(low("a", 4, priority=5), low("b", 4, priority=5))
    assert len(rig.cluster.bound()) == 4
    where = rig.cluster.bound()
    rig.add(o.pod("hi", 4, priority=100))
    assert set(rig.cluster.pods) == {"default/a", "default/b", "default/hi"}
    for k in ("default/g-0", "default/g-1"):
        assert rig.notes(k, "Preempted") == [f"Preempted by default/hi on node {where[k]}"]
    gang_nodes = ", ".join(sorted({where["default/g-0"], where["default/g-1"]}))
    assert rig.notes("default/hi", "Preempting") == [
        f"Preempting 2 pod(s) of lower priority (at most 1) on node(s) {gang_nodes}"]
    rig.clock.advance(2)
    rig.run()
    assert "default/hi" in rig.cluster.bound()
    rig.s.cache.ledger.check_invariants()


def test_a_gang_preemptor_is_nominated_member_by_member():
    rig = Rig(nodes=3)
    rig.add(low("l0", 8), low("l1", 8), low("top", 8, priority=1000))
    freed = {rig.cluster.bound()["default/l0"], rig.cluster.bound()["default/l1"]}
    rig.add(*(prioritised(p, 100) for p in o.our_gang("big", 2, 8)))
    assert set(rig.cluster.pods) == {"default/top", "default/big-0", "default/big-1"}
    nominated = {rig.nominated(f"default/big-{i}") for i in range(2)}
    assert nominated == freed
    assert rig.notes("default/l0", "Preempted")[0].startswith("Preempted by gang default/big on node ")
    rig.clock.advance(2)
    rig.run()
    bound = rig.cluster.bound()
    assert {bound["default/big-0"], bound["default/big-1"]} == freed


@pytest.mark.parametrize(("config", "spec"), [({"preemption": False}, {}), ({}, {"preemptionPolicy": "Never"})],
                         ids=["preemption-off", "policy-never"])
def test_nothing_is_deleted_when_preemption_is_off_or_the_pod_says_never(config, spec):
    rig = Rig(**config)
    rig.add(*(low(f"l{i}", 8) for i in range(2)))
    rig.add(o.pod("hi", 8, priority=100, **spec))
    assert len(rig.cluster.bound()) == 2 and "default/hi" in rig.cluster.pods
    assert rig.nominated("default/hi") is None and not rig.notes("default/hi", "Preempting")
    assert rig.notes("default/hi", "FailedScheduling")


def test_a_failing_planner_parks_the_unit_as_before(rig, monkeypatch):
    def broken(*a, **kw):
        raise RuntimeError("planner bug")

    monkeypatch.setattr(loop_mod, "plan_preemption", broken)
    rig.add(*(low(f"l{i}", 8) for i in range(2)))
    rig.add(o.pod("hi", 8, priority=100))
    assert len(rig.cluster.bound()) == 2 and rig.notes("default/hi", "FailedScheduling")
    rig.add(o.pod("small", 0))  # the loop goes on
    assert "default/small" in rig.cluster.bound()


def test_a_nominated_pod_goes_to_its_nominated_node_without_asking_the_engine(rig, monkeypatch):
    """kube-scheduler's nominated-node fast path: once the victims are gone, the place made for
    the pod is taken as it was planned, even though the other node has emptied meanwhile."""
    rig.add(low("l0", 8), low("l1", 8))
    rig.add(o.pod("hi", 8, priority=100))
    node = rig.nominated("default/hi")
    other = ({"n0", "n1"} - {node}).pop()
    survivor = next(k for k, n in rig.cluster.bound().items() if n == other)
    rig.cluster.delete(rig.s._ref(survivor))  # the other node empties too (its pod finished)
    asked: list[str] = []
    real_place = loop_mod.place
    monkeypatch.setattr(loop_mod, "place", lambda snap, reqs, engine: (asked.extend(r.name for r in reqs),
                                                                       real_place(snap, reqs, engine))[1])
    rig.clock.advance(2)
    rig.run()
    assert rig.cluster.bound().get("default/hi") == node and "default/hi" not in asked
    assert not rig.s._nominations


def test_an_elastic_gangs_later_pod_preempts_when_nothing_ties_it_to_its_running_members():
    """A high-priority elastic gang (min 2 of 3, no required level, no slices) runs on n0 and n1;
    its third pod finds the cluster full of low-priority pods and preempts like any gang would."""
    rig = Rig(nodes=3)
    pods = [prioritised(p, 100) for p in o.our_gang("g", 3, 8, gang_min_members="2")]
    for p, node in zip(pods[:2], ("n0", "n1"), strict=False):
        rig.cluster.add_pod({**p, "spec": {**p["spec"], "nodeName": node}, "status": {"phase": "Running"}})
    rig.add(low("l0", 8))
    rig.add(pods[2])
    assert "default/l0" not in rig.cluster.pods
    assert rig.nominated("default/g-2") == "n2"
    rig.clock.advance(2)
    rig.run()
    assert rig.cluster.bound()["default/g-2"] == "n2"


def test_an_elastic_gangs_later_pod_tied_to_its_rack_does_not_preempt_elsewhere():
    """The same gang with required_level rack on racks of two: its rack r0 is full of its own
    members, so evicting l0 in rack r1 would not help; the pod waits and nothing is evicted."""
    rig = LoopRig(4, per_rack=2, settle=True, steps=30)
    pods = [prioritised(p, 100) for p in o.our_gang("g", 3, 8, gang_min_members="2", required_level="rack")]
    for p, node in zip(pods[:2], ("n0", "n1"), strict=False):
        rig.cluster.add_pod({**p, "spec": {**p["spec"], "nodeName": node}, "status": {"phase": "Running"}})
    rig.add(low("l0", 8), low("l1", 8))
    rig.add(pods[2])
    assert "default/l0" in rig.cluster.pods and "default/l1" in rig.cluster.pods
    assert "default/g-2" not in rig.cluster.bound()
