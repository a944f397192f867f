"""Preemption by the live scheduler against the test API server (real HTTP on 127.0.0.1).

Two 8-GPU nodes in one rack, filled with priority-1 pods before a priority-100 unit arrives::

    rack r0: n0 n1      (8 GPUs each)

The test API server deletes a pod at once (no grace period), so a victim's DELETED event
follows the scheduler's DELETE immediately.
"""

from __future__ import annotations

import time

import pytest

from tests.integration import objects as o
from tests.integration.conftest import bound_pods, events_for, fast_config, wait_for


def setup(server, schedulers, *pods, **config) -> object:
    for i in range(2):
        server.store.create("nodes", o.node(f"n{i}", 8, rack="r0"))
    svc = schedulers.start(config=fast_config(**config))
    wait_for(lambda: svc.is_leader, what="the lease")
    for p in pods:
        server.store.create("pods", p)
    wait_for(lambda: len(bound_pods(server)) == len(pods), what="the low-priority pods bound")
    return svc


def with_priority(pod: dict, priority: int) -> dict:
    return {**pod, "spec": {**pod["spec"], "priority": priority}}


def test_high_priority_pod_evicts_exactly_what_it_needs_and_binds_on_the_nominated_node(apiserver, schedulers):
    svc = setup(apiserver, schedulers, *(o.pod(f"l{i}", 4, priority=1) for i in range(4)))
    before = bound_pods(apiserver)
    apiserver.store.create("pods", o.pod("hi", 4, priority=100))

    bound = wait_for(lambda: "hi" in bound_pods(apiserver) and bound_pods(apiserver), what="hi bound")
    gone = sorted(set(before) - set(bound))
    assert len(gone) == 1 and len(bound) == 4
    node = bound["hi"]
    assert before[gone[0]] == node
    wait_for(lambda: apiserver.store.get("pods", "hi")["status"].get("nominatedNodeName") == node,
             what="nominatedNodeName")
    notes = [e["message"] for e in wait_for(lambda: events_for(apiserver, gone[0], "Preempted"), what="Preempted")]
    assert notes == [f"Preempted by default/hi on node {node}"]
    notes = [e["message"] for e in wait_for(lambda: events_for(apiserver, "hi", "Preempting"), what="Preempting")]
    assert notes == [f"Preempting 1 pod(s) of lower priority (at most 1) on node(s) {node}"]
    assert svc.metrics.preemption_attempts._value.get() == 1
    assert svc.metrics.preemption_victims._sum.get() == 1
    # the victim got its DisruptionTarget condition (a status patch) before the delete
    calls = [(r.method, r.status) for r in apiserver.store.find_requests(path_regex=f"/pods/{gone[0]}(/status)?$")
             if r.method in ("PATCH", "DELETE")]
    assert calls == [("PATCH", 200), ("DELETE", 200)]


def test_a_low_priority_gang_is_removed_whole(apiserver, schedulers):
    gang = [with_priority(p, 1) for p in o.our_gang("g", 2, 8)]
    setup(apiserver, schedulers, *gang)
    apiserver.store.create("pods", o.pod("hi", 4, priority=100))

    wait_for(lambda: "hi" in bound_pods(apiserver), what="hi bound")
    assert apiserver.store.get("pods", "g-0") is None and apiserver.store.get("pods", "g-1") is None
    for name in ("g-0", "g-1"):
        assert events_for(apiserver, name, "Preempted")


@pytest.mark.parametrize(("config", "pod"), [({"preemption": False}, {}), ({}, {"preemptionPolicy": "Never"})],
                         ids=["preemption-off", "pod-never-preempts"])
def test_nothing_is_deleted(apiserver, schedulers, config, pod):
    svc = setup(apiserver, schedulers, *(o.pod(f"l{i}", 8, priority=1) for i in range(2)), **config)
    apiserver.store.create("pods", o.pod("hi", 8, priority=100, **pod))
    wait_for(lambda: events_for(apiserver, "hi", "FailedScheduling"), what="FailedScheduling")
    time.sleep(0.5)  # time for a deletion to show, were there one (the first test sees one within this)
    svc.scheduler.reporter.flush()
    assert sorted(bound_pods(apiserver)) == ["l0", "l1"]
    assert not events_for(apiserver, "hi", "Preempting")
    assert "nominatedNodeName" not in apiserver.store.get("pods", "hi")["status"]
